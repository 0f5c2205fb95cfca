"""The Speech Commands layout (v1, v2, and any folder-per-word dataset): files, labels, splits.

    ROOT/<word>/<speaker>_nohash_<n>.wav      clips, one folder per word
    ROOT/_background_noise_/*.wav             long noise recordings (optional)
    ROOT/validation_list.txt, testing_list.txt  (optional) relative paths of held-out clips
    ROOT/words.txt                            (optional, written by `kws synth`) the target words

Without lists, a clip's split comes from hashing its speaker (the name before ``_nohash_``, else the
whole file name) exactly as the Speech Commands reference code does, so one speaker never lands in
two splits and the split of a file never changes when files are added.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError
from ..config import BACKGROUND_DIR, SILENCE, SPEECH_COMMANDS_10, UNKNOWN

AUDIO_EXTS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
SPLITS = ("train", "val", "test")
_MAX_PER_CLASS = 2 ** 27 - 1


@dataclass(frozen=True)
class Clip:
    path: Path
    word: str          # folder name
    speaker: str
    split: str         # train | val | test


def speaker_of(path: Path) -> str:
    """The speaker id: the file name before ``_nohash_``, else the whole stem."""
    stem = path.stem
    return stem.split("_nohash_")[0] if "_nohash_" in stem else stem


def hash_split(name: str, val_pct: float = 10.0, test_pct: float = 10.0) -> str:
    """Speech Commands' ``which_set``: a stable split from a hash of the speaker part of ``name``."""
    key = re.sub(r"_nohash_.*$", "", name)
    h = int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16)
    pct = (h % (_MAX_PER_CLASS + 1)) * (100.0 / _MAX_PER_CLASS)
    if pct < val_pct:
        return "val"
    if pct < val_pct + test_pct:
        return "test"
    return "train"


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def scan(root: str | Path) -> list[Clip]:
    """All clips under ``root`` with word, speaker and split. Raises DatasetError when unusable."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    val, test = _read_list(root / "validation_list.txt"), _read_list(root / "testing_list.txt")
    has_lists = bool(val or test)
    clips = []
    for word_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if word_dir.name.startswith((".", "_")):
            continue
        for f in sorted(word_dir.iterdir()):
            if f.suffix.lower() not in AUDIO_EXTS or not f.is_file():
                continue
            rel = f"{word_dir.name}/{f.name}"
            if has_lists:
                split = "val" if rel in val else "test" if rel in test else "train"
            else:
                split = hash_split(speaker_of(f))
            clips.append(Clip(f, word_dir.name, speaker_of(f), split))
    if not clips:
        raise DatasetError(f"{root}: no audio files in <word>/ sub-folders (expected ROOT/<word>/*.wav)")
    return clips


def noise_files(root: str | Path) -> list[Path]:
    d = Path(root) / BACKGROUND_DIR
    return sorted(f for f in d.glob("*") if f.suffix.lower() in AUDIO_EXTS) if d.is_dir() else []


def words_file(root: str | Path) -> list[str] | None:
    f = Path(root) / "words.txt"
    return [w.strip() for w in f.read_text().split() if w.strip()] if f.is_file() else None


def resolve_labels(roots: list[Path], clips: list[Clip], task: str, words: list[str] | None) -> tuple[str, ...]:
    """The label list: target words, then ``_unknown_`` and ``_silence_``.

    task ``12``: the ten Speech Commands keywords; ``all``: every word folder; ``auto``: the first
    root's ``words.txt`` when there is one, else every word folder. ``words`` overrides ``task``.
    """
    present = sorted({c.word for c in clips})
    if words:
        targets = list(dict.fromkeys(words))
    elif task == "12":
        targets = list(SPEECH_COMMANDS_10)
    elif task == "all":
        targets = present
    elif task == "auto":
        targets = next((w for w in (words_file(r) for r in roots) if w), None) or present
    else:
        raise DatasetError(f"--task: unknown task {task!r} (choose auto, 12 or all)")
    missing = missing_words(targets, clips)
    if missing:
        raise DatasetError(f"--words: no clips for {', '.join(missing)} in {', '.join(map(str, roots))}")
    return tuple(targets) + (UNKNOWN, SILENCE)


def missing_words(targets, clips: list[Clip]) -> list[str]:
    """Target words (labels starting with ``_`` aside) that have no clip in ``clips``."""
    present = {c.word for c in clips}
    return [w for w in targets if not w.startswith("_") and w not in present]


def label_of(word: str, labels: tuple[str, ...]) -> str:
    """Words the model does not know count as ``_unknown_``."""
    return word if word in labels else UNKNOWN
