"""Decode each split once into a compact int16 memory-mapped array.

    CACHE/<key>/audio.npy    (clips, samples) int16, opened with mmap_mode="r"
    CACHE/<key>/labels.npy   (clips,) int64 label indices
    CACHE/<key>/meta.json    files, label list, counts

The key hashes the files (path, size, mtime), the labels, the front-end's rate and window and
the silence settings, so a changed dataset gets a fresh cache and an unchanged one is never
decoded twice. Each cache folder is written under a temporary name and renamed into place, so an
interrupted build leaves nothing half-written. Speech Commands v2 (~105k clips) is ~3.4 GB here
and is read through the memory map, never held as wav files.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..audio import PAD_FLOOR_DBFS, load_clip, to_int16
from ..config import SILENCE, UNKNOWN, FeatureConfig
from .noise import silence_clips
from .sampler import unknown_cap
from .speech_commands import Clip, label_of


@dataclass
class SplitData:
    audio: np.ndarray          # (clips, samples) int16, memory-mapped
    labels: np.ndarray         # (clips,) int64
    files: list[str]           # source file per clip; "" for generated silence

    def __len__(self) -> int:
        return len(self.labels)


def select_clips(clips: list[Clip], labels: tuple[str, ...], unknown_fraction: float, seed: int) -> list[Clip]:
    """Cap ``_unknown_`` clips at ``unknown_fraction`` of the result (deterministic under ``seed``)."""
    known = [c for c in clips if label_of(c.word, labels) != UNKNOWN]
    unknown = [c for c in clips if label_of(c.word, labels) == UNKNOWN]
    cap = unknown_cap(len(known), unknown_fraction)
    if len(unknown) > cap:
        rng = np.random.default_rng(seed)
        unknown = [unknown[i] for i in sorted(rng.choice(len(unknown), cap, replace=False))]
    return known + unknown


def _decode(args: tuple[str, int, int]) -> np.ndarray:
    path, sr, samples = args
    return to_int16(load_clip(path, sr, samples))


def _key(clips: list[Clip], labels: tuple[str, ...], feats: FeatureConfig, n_silence: int, seed: int,
         noise_bank: list[np.ndarray]) -> str:
    h = hashlib.sha1()
    h.update(json.dumps([labels, feats.sample_rate, feats.clip_samples, n_silence, seed, PAD_FLOOR_DBFS]).encode())
    if n_silence:                          # the silence clips are cut from the bank: another bank, another cache
        for x in noise_bank:
            h.update(f"{len(x)}|".encode() + np.ascontiguousarray(x[:: max(1, len(x) // 4096)]).tobytes())
    for c in clips:
        st = c.path.stat()
        h.update(f"{c.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{c.word}\n".encode())
    return h.hexdigest()[:16]


def build_split(clips: list[Clip], labels: tuple[str, ...], feats: FeatureConfig, cache_dir: Path,
                noise_bank: list[np.ndarray], n_silence: int, seed: int, jobs: int, desc: str) -> SplitData:
    """Decode ``clips`` (plus ``n_silence`` generated silence clips) into the cache; reuse it if present."""
    folder = Path(cache_dir) / _key(clips, labels, feats, n_silence, seed, noise_bank)
    if not (folder / "meta.json").is_file():
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        n = len(clips) + n_silence
        audio = np.lib.format.open_memmap(tmp / "audio.npy", mode="w+", dtype=np.int16,
                                          shape=(n, feats.clip_samples))
        tasks = [(str(c.path), feats.sample_rate, feats.clip_samples) for c in clips]
        pool = Pool(jobs) if jobs > 1 and len(tasks) > 64 else None
        try:
            it = pool.imap(_decode, tasks, chunksize=32) if pool else map(_decode, tasks)
            for i, x in enumerate(tqdm(it, total=len(tasks), desc=desc, unit="clip", leave=False)):
                audio[i] = x
        except BaseException:
            del audio
            shutil.rmtree(tmp, ignore_errors=True)     # nothing half-written stays behind
            raise
        finally:
            if pool:
                pool.terminate()
        if n_silence:
            audio[len(clips):] = to_int16(silence_clips(noise_bank, n_silence, feats.clip_samples, seed))
        audio.flush()
        del audio
        index = {l: i for i, l in enumerate(labels)}
        lab = [index[label_of(c.word, labels)] for c in clips] + [index[SILENCE]] * n_silence
        np.save(tmp / "labels.npy", np.asarray(lab, dtype=np.int64))
        meta = {"labels": list(labels), "files": [str(c.path) for c in clips] + [""] * n_silence}
        (tmp / "meta.json").write_text(json.dumps(meta))
        if folder.exists():                      # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    meta = json.loads((folder / "meta.json").read_text())
    return SplitData(np.load(folder / "audio.npy", mmap_mode="r"), np.load(folder / "labels.npy"), meta["files"])
