"""Reading audio: any wav -> float32 mono at the model's rate, fitted to the window.

Torch-free (numpy, soundfile, soxr): the device path uses it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Anti-aliased resampling (soxr, high quality). ``x``: (samples,) float32."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    return soxr.resample(np.asarray(x, dtype=np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read ``path`` as float32 mono at ``sample_rate``: (samples,), values in [-1, 1].

    Stereo (or more channels) is averaged to mono; any input rate is resampled.
    Raises :class:`AudioError` naming the file when it is missing, empty or not audio.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/TypeError for bad files
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise AudioError(f"{path}: not a readable audio file ({msg})") from None
    if x.shape[0] == 0:
        raise AudioError(f"{path}: audio file has no samples")
    x = x.mean(axis=1)
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    return resample(x, sr, sample_rate)


#: Short recordings are padded to the window with noise at this level (dBFS RMS), not digital
#: silence. Zeros give log(mel + eps) frames that no microphone produces and that training only
#: sees around clean synthetic words; a tightly trimmed real recording padded with zeros is then
#: half "nothing like a stream". Measured on FSDD (0.4-s clips, 2,000 of them, default model):
#: zeros 70.1%, -96 dBFS 70.5%, -90 70.6%, -80 73.7%, -75 73.8%, -70 74.9%, -60 72.8%, -50 67.5%:
#: a quiet room's floor, below the quietest real floors measured (FSDD about -58, Speech Commands
#: about -64 dBFS), and above the front-end's eps (about -84 dBFS of white noise).
PAD_FLOOR_DBFS = -70.0


def noise_floor(n: int, dbfs: float = PAD_FLOOR_DBFS) -> np.ndarray:
    """(n,) float32 white noise at ``dbfs`` RMS, the same for every call (deterministic)."""
    return np.random.default_rng(0).standard_normal(n).astype(np.float32) * np.float32(10 ** (dbfs / 20))


def fit_to_window(x: np.ndarray, n: int, floor_dbfs: float | None = None) -> np.ndarray:
    """Pad (centred) or crop ``x`` to exactly ``n`` samples: (samples,) -> (n,).

    Padding is digital silence, or with ``floor_dbfs`` white noise at that RMS level (the same
    noise for every call: deterministic). A longer clip keeps the ``n``-sample stretch with the
    most energy, so a word in a long recording is not cut off by a plain centre crop.
    """
    x = np.asarray(x, dtype=np.float32)
    if len(x) == n:
        return x
    if len(x) < n:
        left = (n - len(x)) // 2
        if floor_dbfs is None:
            return np.pad(x, (left, n - len(x) - left))
        out = noise_floor(n, floor_dbfs)
        out[left:left + len(x)] = x
        return out
    energy = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    window = energy[n:] - energy[:-n]
    start = int(np.argmax(window))
    return x[start:start + n].copy()


def load_clip(path: str | Path, sample_rate: int, samples: int,
              floor_dbfs: float | None = PAD_FLOOR_DBFS) -> np.ndarray:
    """``read_audio`` then ``fit_to_window`` (short files padded with a quiet noise floor by
    default; ``floor_dbfs=None`` pads with zeros, for mixing a clip into another signal): (samples,) float32."""
    return fit_to_window(read_audio(path, sample_rate), samples, floor_dbfs)


def to_int16(x: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] -> int16 (clipped)."""
    return np.clip(np.round(np.asarray(x) * 32767.0), -32768, 32767).astype(np.int16)


def write_wav(path: str | Path, x: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM mono (float input in [-1, 1], or int16)."""
    data = x if np.asarray(x).dtype == np.int16 else to_int16(x)
    sf.write(str(path), data, sample_rate, subtype="PCM_16")


def speech_bounds(x: np.ndarray, sr: int, top_db: float = 40.0) -> tuple[int, int]:
    """(start, end) samples of the stretch within ``top_db`` of the loudest 10 ms frame (20 ms margins)."""
    hop = sr // 100
    n = len(x) // hop
    if n == 0:
        return 0, len(x)
    e = np.sqrt(np.mean(np.asarray(x[: n * hop], np.float64).reshape(n, hop) ** 2, axis=1)) + 1e-10
    loud = np.nonzero(20 * np.log10(e / e.max()) > -top_db)[0]
    return max(0, loud[0] - 2) * hop, min(len(x), (loud[-1] + 3) * hop)


def trim(x: np.ndarray, sr: int, top_db: float = 40.0) -> np.ndarray:
    """Cut leading/trailing stretches more than ``top_db`` below the loudest 10 ms frame."""
    start, end = speech_bounds(x, sr, top_db)
    return x[start:end]
