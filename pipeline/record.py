"""`kws record`: record a few takes of each word from a microphone, to adapt a model to a voice.

    prompt -> listen -> Segmenter finds one utterance -> trim to the word -> centre in 1 s
    -> DIR/<word>/<speaker>_<word>_<n>.wav (16 kHz mono int16)

The files are in the folder-per-word layout that `kws train` reads. They carry no ``_nohash_``,
so each take is split on its own (most land in training, a few in validation and test); then

    kws train --init runs/default --data data/synth DIR --repeat 1 20 --epochs 3 --out runs/me

adapts the model to that voice (measured with scripts/fsdd_enroll.py). Torch-free: numpy,
soundfile and sounddevice, like `kws stream`.
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import PAD_FLOOR_DBFS, fit_to_window, trim, write_wav
from .errors import StreamError


@dataclass(frozen=True)
class SegmenterConfig:
    rise_db: float = 12.0        # speech: this far above the noise floor...
    min_db: float = -65.0        # ...and above this absolute level (dBFS)
    onset_frames: int = 3        # for this many 10-ms frames in a row
    calibrate_frames: int = 15   # frames heard before an onset may count (the floor needs them)
    quiet_s: float = 0.35        # the utterance ends after this much quiet...
    max_s: float = 2.0           # ...or this long after it started
    pre_s: float = 0.2           # kept before the onset


class Segmenter:
    """Finds the first utterance in a stream of samples at ``sr``.

    ``push(chunk)`` with (samples,) float32 returns None until an utterance has ended, then
    (samples,) float32: from ``pre_s`` before its onset to its end. The noise floor is the 20th
    percentile of the 10-ms frame levels heard before the onset.
    """

    def __init__(self, sr: int, cfg: SegmenterConfig = SegmenterConfig()):
        self.sr, self.cfg, self.hop = sr, cfg, sr // 100
        self.audio = np.zeros(0, np.float32)
        self.frames = 0                      # 10-ms frames measured so far
        self.levels: list[float] = []        # their levels (dBFS), up to the onset
        self.floor: float | None = None      # fixed at the onset
        self.onset: int | None = None        # frame index
        self.last_loud = 0
        self.run = 0

    @property
    def floor_db(self) -> float:
        if self.floor is not None:
            return self.floor
        return float(np.percentile(self.levels, 20)) if self.levels else -100.0

    def push(self, x: np.ndarray) -> np.ndarray | None:
        self.audio = np.concatenate([self.audio, np.asarray(x, np.float32)])
        c = self.cfg
        for k in range(self.frames, len(self.audio) // self.hop):
            self.frames = k + 1
            frame = self.audio[k * self.hop:(k + 1) * self.hop].astype(np.float64)
            db = float(10 * np.log10(np.mean(frame * frame) + 1e-12))
            if self.onset is None:
                loud = k >= c.calibrate_frames and db > max(self.floor_db + c.rise_db, c.min_db)
                self.levels.append(db)
                self.run = self.run + 1 if loud else 0
                if self.run >= c.onset_frames:
                    self.onset, self.last_loud, self.floor = k - c.onset_frames + 1, k, self.floor_db
                continue
            if db > max(self.floor + c.rise_db / 2, c.min_db):
                self.last_loud = k
            if (k - self.last_loud) * self.hop >= c.quiet_s * self.sr or (k - self.onset) * self.hop >= c.max_s * self.sr:
                a = max(0, self.onset * self.hop - int(c.pre_s * self.sr))
                return self.audio[a:(k + 1) * self.hop].copy()
        return None


def word_clip(utterance: np.ndarray, sr: int, clip_samples: int) -> np.ndarray:
    """The word (within 30 dB of its loudest 10-ms frame) centred in a clip, padded with the quiet
    noise floor that short files get when read (audio.PAD_FLOOR_DBFS): (clip_samples,)."""
    return fit_to_window(trim(utterance, sr, top_db=30.0), clip_samples, PAD_FLOOR_DBFS)


def next_take(folder: Path, speaker: str, word: str) -> int:
    pat = re.compile(rf"^{re.escape(speaker)}_{re.escape(word)}_(\d+)\.wav$")
    taken = [int(m.group(1)) for f in folder.glob("*.wav") if (m := pat.match(f.name))] if folder.is_dir() else []
    return max(taken, default=-1) + 1


SPEAKER_RULE = "use letters, digits and '-' only"


def speaker_ok(name: str) -> bool:
    """A speaker name goes into file names before '_': letters, digits and '-'."""
    return re.fullmatch(r"[A-Za-z0-9-]+", name) is not None


def check_speaker(name: str) -> str:
    if not speaker_ok(name):
        raise StreamError(f"--speaker {name!r}: {SPEAKER_RULE}")
    return name


def record(out: Path, words: list[str], takes: int, speaker: str, device: str | None = None,
           timeout_s: float = 8.0, sr: int = 16000, clip_samples: int = 16000, log=print) -> list[Path]:
    """Prompt for and record ``takes`` utterances of each word; -> the files written."""
    from .mic import MicSource
    check_speaker(speaker)
    written: list[Path] = []
    with MicSource(device, sr) as mic:
        log(f"recording from {mic.device['index']} '{mic.device['name']}' into {out}/<word>/: "
            f"say each word once when asked; Ctrl-C to stop")
        for word in words:
            folder = out / word
            for t in range(takes):
                log(f"say '{word}' ({t + 1}/{takes})")
                seg, t0 = Segmenter(sr), time.monotonic()
                mic.read(0.0)                                 # drop what was heard before the prompt
                utt = None
                while utt is None:
                    if time.monotonic() - t0 > timeout_s:
                        raise StreamError(f"heard no speech for '{word}' within {timeout_s:g} s (input level "
                                          f"{seg.floor_db:.0f} dBFS); check the microphone with `kws devices`")
                    utt = seg.push(mic.read(0.05))
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{speaker}_{word}_{next_take(folder, speaker, word)}.wav"
                clip = word_clip(utt, sr, clip_samples)
                tmp = path.with_name(f".{path.name}.tmp.wav")
                write_wav(tmp, clip, sr)
                tmp.replace(path)
                peak = float(np.abs(clip).max())
                log(f"  wrote {path} ({len(utt) / sr:.2f} s heard, peak {20 * np.log10(peak + 1e-9):.0f} dBFS)")
                written.append(path)
    return written


def run_record(a) -> None:
    """The CLI entry (`kws record`)."""
    words = list(a.words)
    if a.model is not None:
        from .runtime import OnnxModel
        words = [w for w in OnnxModel(a.model, threads=1).labels if not w.startswith("_")]
    try:
        files = record(a.out, words, a.takes, a.speaker, a.device, a.timeout,
                       log=lambda m: print(m, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return
    print(f"{len(files)} recordings in {a.out}; adapt a model with: kws train --init runs/default "
          f"--data data/synth {a.out} --repeat 1 20 --epochs 3 --out runs/{a.speaker}")
