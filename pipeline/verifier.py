"""Whisper tiny.en's word scores from ``model.whisper.onnx``, pooled with the model's: torch-free.

`kws export RUN --whisper` writes ``model.whisper.onnx`` beside ``model.onnx``
(pipeline/whisper_export.py). It scores each of the model's words as the whole transcript of a
clip's first 1.5 s (Whisper tiny.en, zero-shot, trained on real speech):

    v = WhisperVerifier("runs/default/model.whisper.onnx")
    ll = v.log_likelihoods([wave16k, ...])     # each (samples,) float32 at 16 kHz -> (clips, words)
    p = v.pooled(probs, ll)                     # probs (clips, labels) of model.onnx -> (clips, labels)

Pooled: log p_model(label) + weight * log q(label), q being Whisper's softmax over its words;
``_unknown_`` takes the words that are not labels (an even share when there are none) and
``_silence_`` an even share; weight 1 is the plain product of the two probabilities. Then
normalised, so the pooled scores are probabilities again. ``kws predict`` and ``kws evaluate`` use
the file when it lies beside the model (``--no-whisper`` leaves it out).

Imports only numpy, onnxruntime and the torch-free parts of this package.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .datasets.speech_commands import UNKNOWN
from .errors import ModelError

KIND = "whisper"


def whisper_path(model: str | Path) -> Path:
    """model.onnx (or a run folder) -> the model.whisper.onnx that belongs to it; model.int8.onnx ->
    model.whisper.int8.onnx where there is one (`kws export --whisper --int8`), else model.whisper.onnx."""
    p = Path(model)
    if p.is_dir() or p.suffix != ".onnx":
        return (p if p.is_dir() else p.parent) / "model.whisper.onnx"
    base = p.name.removesuffix(".onnx")
    if base.endswith(".int8"):
        base = base.removesuffix(".int8")
        if (q := p.with_name(base + ".whisper.int8.onnx")).is_file():
            return q
    return p.with_name(base + ".whisper.onnx")


def pool(p_model: np.ndarray, whisper: np.ndarray, labels: list[str], words: list[str], weight: float) -> np.ndarray:
    """p_model (clips, labels) probabilities, whisper (clips, words) log-likelihoods -> (clips, labels)
    pooled log-scores. Words that are not labels count for _unknown_; _silence_ gets an even share."""
    q = whisper - np.logaddexp.reduce(whisper, axis=1, keepdims=True)
    w = np.full((len(p_model), len(labels)), np.log(1.0 / len(words)))
    for i, l in enumerate(labels):
        own = [j for j, x in enumerate(words) if x == l or (l == UNKNOWN and x not in labels)]
        if own:
            w[:, i] = np.logaddexp.reduce(q[:, own], axis=1)
    return np.log(np.maximum(p_model, 1e-12)) + weight * w


def fit_start(x: np.ndarray, n: int) -> np.ndarray:
    """(samples,) -> (n,): the first n samples, zero-padded at the end (Whisper's own convention)."""
    x = np.asarray(x, np.float32)[:n]
    return np.pad(x, (0, n - len(x))) if len(x) < n else x


class WhisperVerifier:
    """One ``model.whisper.onnx``: (batch, samples) at 16 kHz -> (batch, words) log-likelihoods."""

    def __init__(self, path: str | Path, threads: int = 0):
        from .runtime import _session
        self.path = Path(path)
        self.session = _session(self.path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("kind") != KIND:
            raise ModelError(f"{self.path}: not a Whisper scorer graph (write one with `kws export RUN --whisper`)")
        try:
            self.words: list[str] = json.loads(meta["words"])
            self.labels: list[str] = json.loads(meta["labels"])
            self.sample_rate, self.samples = int(meta["sample_rate"]), int(meta["samples"])
            self.weight = float(meta.get("weight", "1"))
        except (KeyError, ValueError) as e:
            raise ModelError(f"{self.path}: bad metadata ({e})") from None

    def check_labels(self, labels: list[str], model: Path | str) -> None:
        if list(labels) != self.labels:
            raise ModelError(f"{self.path}: made for labels {self.labels}, not {model}'s; export again with --whisper")

    def log_likelihoods(self, waves: list[np.ndarray] | np.ndarray, batch: int = 8, progress: bool = False) -> np.ndarray:
        """Clips at 16 kHz (each (samples,), any length: the first 1.5 s are scored) -> (clips, words)."""
        x = np.stack([fit_start(w, self.samples) for w in waves]) if len(waves) else np.zeros((0, self.samples), np.float32)
        steps = range(0, len(x), batch)
        if progress:
            from tqdm import tqdm
            steps = tqdm(steps, desc="whisper", unit="batch", leave=False)
        out = [self.session.run(None, {"waveform": x[i:i + batch]})[0] for i in steps]
        return np.concatenate(out) if out else np.zeros((0, len(self.words)), np.float32)

    def pooled(self, probs: np.ndarray, loglik: np.ndarray) -> np.ndarray:
        """(clips, labels) model probabilities and (clips, words) log-likelihoods -> (clips, labels)
        pooled probabilities."""
        z = pool(probs, loglik, self.labels, self.words, self.weight)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def load_verifier(model: str | Path, use: bool = True, threads: int = 0) -> WhisperVerifier | None:
    """The Whisper scorer beside ``model`` when there is one and ``use``; else None."""
    p = whisper_path(model)
    return WhisperVerifier(p, threads) if use and p.is_file() else None
