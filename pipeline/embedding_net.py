"""Google's speech embedding in PyTorch: its log-mel front-end on this project's frames, and its
convolutional network, with the weights of the two ONNX graphs (pipeline/speech_embedding.py).

In torch it can sit inside the model: trained beside the BiLSTM, exported in the same graphs,
streamed from the same frame cache (README: "A pretrained speech embedding").

``EmbeddingLogMel``: (batch, samples) 16 kHz -> (batch, frames, 32). The upstream graph frames
the audio 512 samples at a time with a 400-sample Hann window at offsets 56..455 of each frame
(the rest of the DFT kernel is zero). Here frame k is samples 160k .. 160k+399 through those same
400 taps, the same framing as the MFCC (``FeatureConfig``: n_fft 400, hop 160, not centred), so
frame k of both front-ends covers the same samples: the upstream features 56 samples (3.5 ms) later,
equal power per bin. Then mel power -> max(., 1e-10) -> 10 log10 -> / 10 + 2, as openWakeWord scales
it. Not the upstream floor at 80 dB below the loudest bin: that is a per-clip scaling (not
streaming-safe), and without it the head scored the same on real speakers (README).

``EmbeddingNet``: (n, 76, 32) log-mel windows -> (n, 96). Convolutions (batch norm folded in),
LeakyReLU 0.2, max(., -0.4), max-pooling, exactly as in ``embedding_model.onnx``.

Both are built from the ONNX initializers once (``from_onnx``); their weights then live in the
checkpoint, so a trained run exports without the graphs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ModelError
from .speech_embedding import N_MELS, WINDOW_FRAMES, fetch_models, window_starts

N_FFT, HOP, TAPS_FROM = 400, 160, 56     # 400 window taps, at offset 56 of the upstream 512-sample kernel


class EmbeddingLogMel(nn.Module):
    """(batch, samples) float in [-1, 1] -> (batch, frames, 32), frames = 1 + (samples - 400) // 160."""

    def __init__(self):
        super().__init__()
        self.register_buffer("dft", torch.zeros(2 * 257, 1, N_FFT))      # real rows, then imaginary
        self.register_buffer("mel", torch.zeros(257, N_MELS))

    @classmethod
    def from_onnx(cls, model) -> "EmbeddingLogMel":
        from onnx import numpy_helper
        w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        try:
            re, im, mel = w["0.stft.conv_real.weight"], w["0.stft.conv_imag.weight"], w["1.melW"]
        except KeyError as e:
            raise ModelError(f"speech embedding: melspectrogram.onnx has no {e}; not the graph this code reads") from None
        if np.abs(re[:, :, :TAPS_FROM]).max() > 0 or np.abs(re[:, :, TAPS_FROM + N_FFT:]).max() > 0:
            raise ModelError("speech embedding: melspectrogram.onnx's window is not the 400 taps this code expects")
        m = cls()
        m.dft.copy_(torch.from_numpy(np.concatenate([re, im])[:, :, TAPS_FROM:TAPS_FROM + N_FFT]))
        m.mel.copy_(torch.from_numpy(np.array(mel)))
        return m

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        # the upstream graph takes int16-scaled samples
        spec = nn.functional.conv1d(wave.unsqueeze(1) * 32767.0, self.dft, stride=HOP)   # (batch, 514, frames)
        power = spec[:, :257] ** 2 + spec[:, 257:] ** 2
        mel = power.transpose(1, 2) @ self.mel                                     # (batch, frames, 32)
        return torch.log10(mel.clamp_min(1e-10)) + 2.0                            # 10 log10(.) / 10 + 2


class EmbeddingNet(nn.Module):
    """(n, 76, 32) -> (n, 96): the upstream convolutional network, layer for layer."""

    def __init__(self, layers: list[tuple]):
        super().__init__()
        mods = []
        for kind, *args in layers:
            if kind == "conv":
                out_c, in_c, kh, kw, pad_w, bias = args
                mods.append(nn.Conv2d(in_c, out_c, (kh, kw), padding=(0, pad_w), bias=bias))
            elif kind == "act":
                mods.append(_LeakyFloor(*args))
            else:
                mods.append(nn.MaxPool2d(tuple(args[0])))
        self.layers = nn.Sequential(*mods)
        self.spec = layers

    @classmethod
    def from_onnx(cls, model) -> "EmbeddingNet":
        from onnx import helper, numpy_helper
        w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        layers, weights = [], []
        nodes = list(model.graph.node)
        for i, n in enumerate(nodes):
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            if n.op_type == "Conv":
                k = w[n.input[1]]
                pads = list(attrs.get("pads", [0, 0, 0, 0]))
                if pads[0] or pads[2] or pads[1] != pads[3] or tuple(attrs.get("strides", [1, 1])) != (1, 1):
                    raise ModelError("speech embedding: embedding_model.onnx has a convolution this code does not read")
                bias = len(n.input) > 2
                layers.append(("conv", k.shape[0], k.shape[1], k.shape[2], k.shape[3], pads[1], bias))
                weights.append((k, w[n.input[2]] if bias else None))
            elif n.op_type == "LeakyRelu":
                floor = nodes[i + 1]
                if floor.op_type != "Max":
                    raise ModelError("speech embedding: embedding_model.onnx: LeakyRelu not followed by Max")
                layers.append(("act", float(attrs["alpha"]), float(w[floor.input[1]].ravel()[0])))
            elif n.op_type == "MaxPool":
                if attrs["kernel_shape"] != attrs["strides"]:
                    raise ModelError("speech embedding: embedding_model.onnx has a pooling this code does not read")
                layers.append(("pool", list(attrs["kernel_shape"])))
            elif n.op_type not in ("Max", "Reshape"):
                raise ModelError(f"speech embedding: embedding_model.onnx has a {n.op_type} node this code does not read")
        net = cls(layers)
        convs = [m for m in net.layers if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            for conv, (k, b) in zip(convs, weights):
                conv.weight.copy_(torch.from_numpy(np.array(k)))
                if b is not None:
                    conv.bias.copy_(torch.from_numpy(np.array(b)))
        return net

    def forward(self, win: torch.Tensor) -> torch.Tensor:
        y = self.layers(win.unsqueeze(1))              # (n, 1, 76, 32) -> (n, 96, 1, 1)
        return y.flatten(1)


class _LeakyFloor(nn.Module):
    """max(LeakyReLU(x, alpha), floor)."""

    def __init__(self, alpha: float, floor: float):
        super().__init__()
        self.alpha, self.floor = alpha, floor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.leaky_relu(x, self.alpha).clamp_min(self.floor)


def load_pretrained(model_dir: Path | None = None) -> tuple[EmbeddingLogMel, EmbeddingNet]:
    """The two modules with the upstream weights (fetched into the cache on first use), frozen, in eval mode."""
    import onnx
    d = fetch_models(model_dir)
    mel = EmbeddingLogMel.from_onnx(onnx.load(d / "melspectrogram.onnx"))
    net = EmbeddingNet.from_onnx(onnx.load(d / "embedding_model.onnx"))
    for m in (mel, net):
        m.eval().requires_grad_(False)
    return mel, net


__all__ = ["EmbeddingLogMel", "EmbeddingNet", "load_pretrained", "window_starts"]
