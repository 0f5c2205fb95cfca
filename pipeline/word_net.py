"""EfficientWord-Net's pretrained word embedding, in PyTorch: its log-filterbank frames and its network.

EfficientWord-Net (Apache-2.0) ships a slimmed ResNet-50 trained with an ArcFace loss to tell spoken
words apart across many real speakers: 1.5 s of audio as 149 frames of 64 log-filterbank bands ->
one unit-length 2048-dim vector. A classifier on these vectors, trained on synthetic voices only,
carries over to real speakers (README, Results: "A word embedding trained on real speech"): the
word head (pipeline/word_head.py) puts one beside the BiLSTM and the speech-embedding head.

* :func:`fetch_word_model` takes the graph from the ``efficientword-net`` wheel on the package
  registry (pip, no other network) into ``~/.cache/kws/word_embedding`` (``$KWS_CACHE``), checks
  its SHA-256 and keeps it; the package itself is not installed.
* :class:`WordFbank`: (batch, samples) -> (batch, frames, 64): the wheel's front-end
  (python_speech_features' ``logfbank``: rectangular 400-sample frames 160 apart, 512-point power
  spectrum / 512, 64 mel filters to 8 kHz, ``log`` with a floor at float eps) on the MFCC's own
  frames, so the stream's frame cache serves it too. No per-clip scaling in the frames.
* :class:`WordNet`: (batch, 149, 64) -> (batch, 2048): the graph's nodes run in PyTorch (weights
  read from it; equal to onnxruntime within 1e-4, a test checks it). The network scales each
  window's frames to [-1, 1] by their own minimum and maximum first: a function of the window, so
  a stream's window still scores as offline.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .errors import ModelError
from .speech_embedding import read_from_wheel, write_checked

WHEEL = "efficientword-net==1.0.5"
MEMBER = "eff_word_net/models/resnet_50_arc/slim_93%_accuracy_72.7390%.onnx"
FILE, WORD_SHA256 = "word_resnet50_arc.onnx", "373916c2a52dffb716738ac451d384ca2097d4cca5bde1357377023da8e47cbe"
WORD_FRAMES, WORD_BANDS, WORD_DIM = 149, 64, 2048
N_FFT_WORD, FRAME, HOP = 512, 400, 160


def default_dir() -> Path:
    return Path(os.environ.get("KWS_CACHE", Path.home() / ".cache" / "kws")) / "word_embedding"


def fetch_word_model(dest: Path | None = None) -> Path:
    """The word-embedding graph (a file in ``dest``), taken from the wheel when missing or damaged.
    ModelError (one line) when pip cannot get the wheel."""
    dest = Path(dest or default_dir())
    path = dest / FILE
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == WORD_SHA256:
        return path
    dest.mkdir(parents=True, exist_ok=True)
    data = read_from_wheel(WHEEL, [MEMBER], "word embedding", dest)[MEMBER]
    write_checked(data, WORD_SHA256, path, "word embedding")
    return path


def mel_filters(n_filters: int = WORD_BANDS, n_fft: int = N_FFT_WORD, sample_rate: int = 16000) -> np.ndarray:
    """(n_fft // 2 + 1, n_filters): python_speech_features' triangular filters, 0 Hz to Nyquist."""
    mel = lambda hz: 2595 * np.log10(1 + hz / 700.0)
    hz = lambda m: 700 * (10 ** (m / 2595.0) - 1)
    points = np.linspace(mel(0), mel(sample_rate / 2), n_filters + 2)
    bins = np.floor((n_fft + 1) * hz(points) / sample_rate)
    fb = np.zeros((n_filters, n_fft // 2 + 1))
    for j in range(n_filters):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return fb.T.astype(np.float32)


class WordFbank(nn.Module):
    """(batch, samples) float waveform -> (batch, frames, 64) log filterbank energies.
    Frames as the MFCC's (400 samples, 160 apart, not centred); a real DFT as two matrix products."""

    def __init__(self):
        super().__init__()
        k = np.arange(N_FFT_WORD // 2 + 1)[:, None] * np.arange(FRAME)[None, :] * (2 * np.pi / N_FFT_WORD)
        bases = np.concatenate([np.cos(k), -np.sin(k)])                      # (2 * 257, 400): rectangular window
        self.register_buffer("dft", torch.from_numpy(bases.astype(np.float32))[:, None], persistent=False)
        self.register_buffer("fb", torch.from_numpy(mel_filters()), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = F.conv1d(wave.unsqueeze(1), self.dft, stride=HOP)            # (batch, 2 * 257, frames)
        n = N_FFT_WORD // 2 + 1
        power = ((spec[:, :n] ** 2 + spec[:, n:] ** 2) / N_FFT_WORD).transpose(1, 2)
        return torch.log(torch.clamp_min(power @ self.fb, float(np.finfo(np.float64).eps)))


class WordNet(nn.Module):
    """(batch, 149, 64) log filterbank frames -> (batch, 2048) unit vectors: the graph's nodes in PyTorch."""

    def __init__(self, graph_path: Path):
        super().__init__()
        import onnx
        from onnx import numpy_helper
        g = onnx.load(str(graph_path)).graph
        nodes = list(g.node)
        start = next((i for i, n in enumerate(nodes) if n.op_type == "BatchNormalization"), None)
        ops = {n.op_type for n in nodes[:start]} if start else set()
        if start is None or ops != {"Reshape", "ReduceMin", "ReduceMax", "Sub", "Div", "Mul"}:
            raise ModelError(f"word embedding: {graph_path} is not the graph this code runs")
        self.first = nodes[start].input[0]                                 # the scaled frames, (1, 1, 149, 64)
        self.nodes = [(n.op_type, list(n.input), list(n.output),
                       {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}) for n in nodes[start:]]
        self.out = g.output[0].name
        self.names: dict[str, str] = {}
        for i, init in enumerate(g.initializer):
            self.register_buffer(f"w{i}", torch.from_numpy(numpy_helper.to_array(init).copy()))
            self.names[init.name] = f"w{i}"
        known = {"Conv", "Relu", "Add", "BatchNormalization", "MaxPool", "GlobalAveragePool", "Flatten",
                 "Abs", "Pow", "ReduceSum", "Clip", "Expand", "Div"}
        other = {op for op, *_ in self.nodes} - known
        if other:
            raise ModelError(f"word embedding: {graph_path} has operators this code does not run: {sorted(other)}")

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b = frames.shape[0]
        flat = frames.reshape(b, -1)
        lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
        x = ((flat - lo) / (hi - lo) * 2 - 1).reshape(b, 1, WORD_FRAMES, WORD_BANDS)
        env = {self.first: x}
        get = lambda name: env[name] if name in env else getattr(self, self.names[name])
        for op, ins, outs, at in self.nodes:
            if op == "Conv":
                p = at.get("pads", [0, 0, 0, 0])
                y = F.conv2d(get(ins[0]), get(ins[1]), get(ins[2]) if len(ins) > 2 else None,
                             stride=at.get("strides", 1), padding=(p[0], p[1]), groups=at.get("group", 1))
            elif op == "Relu":
                y = torch.relu(get(ins[0]))
            elif op == "Add":
                y = get(ins[0]) + get(ins[1])
            elif op == "BatchNormalization":
                y = F.batch_norm(get(ins[0]), get(ins[3]), get(ins[4]), get(ins[1]), get(ins[2]), False, 0.0, at["epsilon"])
            elif op == "MaxPool":
                p = at.get("pads", [0, 0, 0, 0])
                y = F.max_pool2d(get(ins[0]), at["kernel_shape"], at["strides"], (p[0], p[1]))
            elif op == "GlobalAveragePool":
                y = get(ins[0]).mean(dim=(2, 3), keepdim=True)
            elif op == "Flatten":
                y = get(ins[0]).flatten(1)
            else:                     # the closing L2 normalisation: Abs, Pow, ReduceSum, Pow, Clip, Expand, Div
                if op == "Div":
                    y = F.normalize(get(ins[0]), dim=1, eps=1e-12)
                else:
                    continue
            env[outs[0]] = y
        return env[self.out] if self.out in env else y
