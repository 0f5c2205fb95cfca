"""Keep freed tensor memory inside the process (glibc's allocator), for CPU training.

A CPU training step allocates and frees dozens of tensors of 1-50 MB: the batch's waveforms
(128, 16000) float32 are 8 MB, their 22,500-point spectra 23 MB, the LSTM's activations and
gradients a few MB each. glibc serves blocks that large with mmap and unmaps them on free (or
trims the heap's top once a few MB of it are free), so every step maps the same memory again and
the kernel zero-fills it page by page. :func:`keep_freed_memory` has glibc take every block from
the heap and keep up to 1 GB of freed heap. Measured on the 2-core Xeon of these machines, ``kws
train --data data/synth --epochs 2`` under ``/usr/bin/time``, the same process otherwise (same
losses to the last digit):

    glibc defaults   5,040,602 page faults, 17.7 s in the kernel, epochs 33.7 / 33.8 s, 78.7 s in all
    this               261,823 page faults,  1.4 s in the kernel, epochs 25.4 / 27.0 s, 62.3 s in all

Peak resident memory grows by about 150 MB (1.47 -> 1.62 GB: what the heap keeps).
``kws train``, ``kws train-head`` and ``kws demo`` set it (through :func:`pipeline.train.train` and
:func:`pipeline.head_train.train_head`), and so does the training benchmark's project path. The
streaming path never does: it allocates little per hop and runs for hours. ``KWS_GLIBC_TUNING=0``
turns it off; a process started with its own ``MALLOC_*`` or ``GLIBC_TUNABLES`` malloc settings or
a preloaded allocator keeps them.
"""
from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4

SETTINGS = ((M_MMAP_MAX, 0),                 # every block from the heap, none mapped for itself (glibc
                                             # still maps when the heap cannot grow)
            (M_TRIM_THRESHOLD, 2**30),       # give the heap's free top back to the kernel only past 1 GB
            (M_TOP_PAD, 64 * 2**20))         # grow the heap 64 MB at a time

_done: bool | None = None


def _user_chose_allocator() -> bool:
    if os.environ.get("KWS_GLIBC_TUNING", "1") == "0":
        return True
    if any(k.startswith("MALLOC_") for k in os.environ) or "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return True
    preload = os.environ.get("LD_PRELOAD", "")
    return any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc"))


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says, once per process. -> True when the settings
    are in force (Linux with glibc, not turned off), False otherwise (nothing changed)."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or _user_chose_allocator():
        return _done
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version              # glibc only: musl's mallopt is a stub
    except (OSError, AttributeError):
        return _done
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = all(mallopt(p, v) == 1 for p, v in SETTINGS)
    return _done
