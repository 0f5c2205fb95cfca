"""Torch-free inference with onnxruntime: what runs on the device.

    m = OnnxModel("model.onnx")
    m.labels, m.sample_rate, m.config, m.thresholds
    m.scores(wave)            # (batch, samples) or (samples,) float32 -> (batch, classes)
    m.predict_files([...])    # [(label, score), ...]

Imports only numpy, onnxruntime and the torch-free parts of this package.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .audio import fit_to_window, read_audio
from .config import RunConfig
from .errors import ConfigError, ModelError


def _session(path: Path, threads: int) -> ort.InferenceSession:
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path}: not a loadable ONNX model ({first})") from None


class OnnxModel:
    """One exported graph plus its metadata (labels, sample rate, config, thresholds)."""

    def __init__(self, path: str | Path, threads: int = 1):
        self.path = Path(path)
        self.session = _session(self.path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        if "labels" not in meta or "config" not in meta:
            raise ModelError(f"{self.path}: model has no 'labels'/'config' metadata (export it with `kws export`)")
        try:
            self.labels: list[str] = json.loads(meta["labels"])
            self.config = RunConfig.from_json(meta["config"])
        except (json.JSONDecodeError, ConfigError) as e:
            raise ModelError(f"{self.path}: bad metadata ({e})") from None
        self.kind = meta.get("kind", "waveform")
        self.sample_rate = int(meta.get("sample_rate", self.config.features.sample_rate))
        self.thresholds: dict[str, float] = json.loads(meta.get("thresholds", "{}") or "{}")
        self.calibration: dict | None = json.loads(meta.get("calibration", "null") or "null")   # `kws calibrate`
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def scores(self, wave: np.ndarray) -> np.ndarray:
        """(batch, clip_samples) or (clip_samples,) float32 waveform -> (batch, classes) probabilities."""
        if self.kind != "waveform":
            raise ModelError(f"{self.path}: a '{self.kind}' graph, not the waveform model (use model.onnx)")
        wave = np.atleast_2d(np.asarray(wave, np.float32))
        n = self.config.features.clip_samples
        if wave.shape[1] != n:
            raise ModelError(f"waveform has {wave.shape[1]} samples; this model takes {n}")
        return self.run(wave)

    def predict_files(self, paths: list[str | Path], batch_size: int = 64, verifier=None) -> list[tuple[str, float]]:
        """Read, resample and fit each file to the window, score in batches -> [(label, score)].
        With ``verifier`` (pipeline/verifier.py), pooled with Whisper's scores of each file."""
        f = self.config.features
        if verifier is not None:
            verifier.check_labels(self.labels, self.path)
        out = []
        for i in range(0, len(paths), batch_size):
            waves = [read_audio(p, f.sample_rate) for p in paths[i:i + batch_size]]
            p = self.scores(np.stack([fit_to_window(x, f.clip_samples) for x in waves]))
            if verifier is not None:
                sr = verifier.sample_rate
                starts = waves if sr == f.sample_rate else [read_audio(q, sr) for q in paths[i:i + batch_size]]
                p = verifier.pooled(p, verifier.log_likelihoods(starts))
            out += [(self.labels[k], float(row[k])) for row, k in zip(p, p.argmax(1))]
        return out


def sibling(path: Path, kind: str) -> Path:
    """model.onnx -> model.frames.onnx / model.frontend.onnx / model.embed_stem.onnx / model.embed_tail.onnx /
    model.cached.onnx (and model.int8.onnx -> model.frames.int8.onnx, model.cached.int8.onnx; the
    front-end and the embedding stay float)."""
    name = path.name
    if name.endswith(".int8.onnx"):
        base, tail = name[: -len(".int8.onnx")], ".int8.onnx"
    else:
        base, tail = name[: -len(".onnx")], ".onnx"
    if kind in ("frontend", "embed_stem", "embed_tail"):
        tail = ".onnx"
    return path.with_name(f"{base}.{kind}{tail}")


def pool_word_np(probs: np.ndarray, word_logprobs: np.ndarray) -> np.ndarray:
    """(batch, classes) probabilities of the BiLSTM with the embedding head and (batch, classes)
    log-probabilities of the word head -> (batch, classes) probabilities: their normalised geometric
    mean, the torch-free twin of ``word_head.pool_word`` for the stream."""
    z = (np.log(np.maximum(probs, 1e-38)) + word_logprobs) / 2
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)
