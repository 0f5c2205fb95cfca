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

``split_net``: the network as a convolutional stem and a tail, for a stream (README: "The
embedding's stem as a stream"). Its convolutions are "valid" along time (padding only across the mel
bins), so up to its second pooling in time the network is a function of absolute frames: a window
``stride`` frames later shares all but ``stride / 2`` of its stem positions with the window before.
``EmbeddingStem``: the stem as a stream, (1, frames, 32) and each convolution's last rows ->
(1, 72, frames / 2, 8), a position per 2 frames, from the 22 frames up to it, and the new rows;
``EmbeddingTail``: (n, 72, 28, 8), the 28 positions of a 76-frame window -> (n, 96). A stream
keeps the positions by absolute frame and runs the stem only on the hop's new frames.

Both are built from the ONNX initializers once (``from_onnx``); their weights then live in the
checkpoint, so a trained run exports without the graphs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ModelError
from .speech_embedding import N_MELS, fetch_models, window_starts

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

    def used_bins(self) -> tuple[int, int]:
        """(first, last + 1) of the DFT bins the mel filters use: bins 2..121 (60 Hz .. 3.8 kHz) of 257
        upstream. Only those are computed (a constant in an exported graph)."""
        used = torch.nonzero(self.mel.abs().sum(dim=1)).flatten().tolist()
        return (used[0], used[-1] + 1) if used else (0, 1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        lo, hi = self.used_bins()
        n = self.mel.shape[0]
        dft = torch.cat([self.dft[lo:hi], self.dft[n + lo:n + hi]])                 # (2 * used, 1, 400)
        # the upstream graph takes int16-scaled samples
        spec = nn.functional.conv1d(wave.unsqueeze(1) * 32767.0, dft, stride=HOP)     # (batch, 2 * used, frames)
        power = spec[:, :hi - lo] ** 2 + spec[:, hi - lo:] ** 2
        mel = power.transpose(1, 2) @ self.mel[lo:hi]                              # (batch, frames, 32)
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


class EmbeddingStem(nn.Module):
    """``EmbeddingNet``'s layers before the split, run as a stream: each call takes the next frames
    and every convolution's last input rows from the call before (its state), so no frame is
    convolved twice.

    (1, frames, 32), states -> (1, channels, frames / time_stride, bins), new states. Output j of a
    call whose first frame is c covers frames [c + time_stride * (j + 1) - field, c + time_stride * (j + 1)).
    From zero states (``zero_states``) the first ``field / time_stride - 1`` outputs see the zeros
    and are not positions of the network; from there on they are. ``frames`` must be a multiple of
    ``time_stride``."""

    def __init__(self, layers: list[nn.Module], time_stride: int, field: int):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.time_stride, self.field = time_stride, field

    def zero_states(self, bins: int = 32) -> list[torch.Tensor]:
        """One (1, channels, kernel rows - 1, bins) zero tensor per convolution taller than one row."""
        out, x = [], torch.zeros(1, 1, self.field, bins)
        for m in self.layers:
            if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1:
                out.append(torch.zeros(1, x.shape[1], m.kernel_size[0] - 1, x.shape[3]))
            x = m(x)
        return out

    def forward(self, logmel: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, new, k = logmel.unsqueeze(1), [], 0
        for m in self.layers:
            if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1:
                x = torch.cat([states[k], x], dim=2)
                new.append(x[:, :, x.shape[2] - (m.kernel_size[0] - 1):])
                k += 1
            x = m(x)
        return (x, *new)


class EmbeddingTail(nn.Module):
    """(n, channels, positions of one window, bins) -> (n, 96): ``EmbeddingNet``'s layers after the split."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, stem: torch.Tensor) -> torch.Tensor:
        return self.layers(stem).flatten(1)


def split_net(net: EmbeddingNet, stride: int) -> tuple[EmbeddingStem, EmbeddingTail]:
    """Cut ``net`` before a pooling: -> (stem, tail), sharing ``net``'s modules, with
    tail(positions of a 76-frame window w) == net(w). The cut is the deepest one where windows
    ``stride`` frames apart share positions (the stem's time stride divides ``stride``) and the
    stream's rows line up with the network's (each pooling in time pairs the rows the network pairs,
    and the field is a whole number of strides). For the default stride 10 the stem ends before the
    second time pooling: time stride 2, field 22 frames."""
    best, jump, field = (0, 1, 1), 1, 1          # best: (cut, time stride, field) of the deepest cut that works
    for i, (kind, *args) in enumerate(net.spec + [("end",)]):
        if kind in ("pool", "end"):
            if stride % jump or field % jump:
                break
            best = (i, jump, field)
        kt = args[2] if kind == "conv" else args[0][0] if kind == "pool" else 1      # rows in time
        if kind == "pool" and (field - jump) % (jump * kt):     # it would pair rows the network does not
            break
        field += (kt - 1) * jump
        jump *= kt if kind == "pool" else 1
    cut, jump, field = best
    mods = list(net.layers)
    return EmbeddingStem(mods[:cut], jump, field), EmbeddingTail(mods[cut:])


def stem_positions(stem: EmbeddingStem, frames: int) -> int:
    """Positions of the network in ``frames`` frames (pooling drops a trailing odd row, as ``net`` does)."""
    return (frames - stem.field) // stem.time_stride + 1


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


__all__ = ["EmbeddingLogMel", "EmbeddingNet", "EmbeddingStem", "EmbeddingTail", "load_pretrained", "split_net",
           "stem_positions", "window_starts"]
