"""From dataset folders to decoded splits: the one entry point training uses.

    roots -> scan -> labels -> per split: cap _unknown_, add _silence_ -> int16 memmap cache

With ``train.unknown_per_epoch`` (off by default) the training split keeps all its ``_unknown_``
clips, and each epoch draws the capped number of them afresh (``datasets/sampler.py``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import FeatureConfig, TrainConfig
from .datasets.cache import SplitData, build_split, select_clips
from .datasets.noise import noise_bank_or_synthetic
from .datasets.speech_commands import SPLITS, Clip, DatasetError, missing_words, noise_files, resolve_labels, scan


@dataclass
class PreparedData:
    labels: tuple[str, ...]
    splits: dict[str, SplitData]
    noise_bank: list[np.ndarray]


def gather_clips(roots: list[Path]) -> list[Clip]:
    clips: list[Clip] = []
    for r in roots:
        clips += scan(r)
    return clips


def noise_sources(roots: list[Path], noise_dirs: list[Path]) -> list[Path]:
    files = [f for r in roots for f in noise_files(r)]
    for d in noise_dirs:
        d = Path(d)
        if not d.is_dir():
            raise DatasetError(f"--noise-dir {d}: no such folder")
        found = sorted(f for f in d.rglob("*") if f.suffix.lower() in {".wav", ".flac", ".ogg"})
        if not found:
            raise DatasetError(f"--noise-dir {d}: no .wav/.flac/.ogg files in it")
        files += found
    return files


def check_repeats(roots: list[Path], repeats: tuple[int, ...]) -> None:
    """``repeats`` (the --repeat flag) needs one number per data folder, or none at all."""
    if repeats and len(repeats) != len(roots):
        raise DatasetError(f"--repeat: give one number per --data folder ({len(roots)} folders, "
                           f"{len(repeats)} numbers)")


def clip_repeats(files: list[str], roots: list[Path], repeats: tuple[int, ...]) -> np.ndarray | None:
    """Per training clip, how often an epoch uses it: ``repeats[i]`` for the clips under ``roots[i]``,
    1 for generated silence; None when every folder is used once. (clips,) int64."""
    check_repeats(roots, repeats)
    if not any(r > 1 for r in repeats):
        return None
    prefixes = [os.path.join(os.path.abspath(r), "") for r in roots]
    out = np.ones(len(files), np.int64)
    for k, f in enumerate(files):
        if f:
            a = os.path.abspath(f)
            out[k] = next((n for p, n in zip(prefixes, repeats) if a.startswith(p)), 1)
    return out


def prepare(roots: list[Path], feats: FeatureConfig, train: TrainConfig, cache_dir: Path,
            task: str = "auto", words: list[str] | None = None, labels: tuple[str, ...] | None = None,
            noise_dirs: list[Path] = (), jobs: int = 1, labels_from: str = "labels") -> PreparedData:
    """Scan, label, decode and cache every split. ``labels`` (from a checkpoint) overrides task/words."""
    roots = [Path(r) for r in roots]
    clips = gather_clips(roots)
    if labels:
        missing = missing_words(labels, clips)
        if missing:
            raise DatasetError(f"{labels_from}: checkpoint from another config: its words {', '.join(missing)} "
                               f"have no clips in {', '.join(map(str, roots))}")
    labels = labels or resolve_labels(roots, clips, task, words)
    bank = noise_bank_or_synthetic(noise_sources(roots, list(noise_dirs)), feats.sample_rate, train.seed)
    splits = {}
    for i, split in enumerate(SPLITS):
        in_split = [c for c in clips if c.split == split]
        chosen = select_clips(in_split, labels, train.unknown_fraction, train.seed + i)
        if not chosen and split == "train":
            raise DatasetError(f"{', '.join(map(str, roots))}: no training clips")
        n_sil = int(round(train.silence_fraction * len(chosen)))
        if split == "train" and train.unknown_per_epoch:     # all of them; each epoch draws its share
            chosen = in_split
        splits[split] = build_split(chosen, labels, feats, cache_dir, bank, n_sil, train.seed + 100 + i,
                                    jobs, desc=f"decode {split}")
    return PreparedData(labels, splits, bank)
