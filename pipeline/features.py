"""MFCC front-end as a module holding its buffers (window, DFT bases, mel filterbank, DCT).

Two ways to get the power spectrum, equal within float32 rounding:

* ``torch.stft`` (FFT): used in training, fastest on GPU and CPU;
* framing + real DFT as one strided convolution with precomputed windowed cos/sin bases: used in
  the exported ONNX graph, where it is plain Conv/MatMul work that onnxruntime runs fast (the
  ONNX STFT op is several times slower on one CPU core; see scripts/bench_inference.py).

Both give ``log(mel + eps)`` followed by an orthonormal DCT-II, the same as
``torchaudio.transforms.MFCC(log_mels=True, melkwargs=dict(center=False, mel_scale="htk", norm=None))``
and librosa's ``mfcc(S=log(melspectrogram(center=False, htk=True, norm=None) + eps))``.
No per-clip scaling: frames computed in a stream equal frames computed offline.
"""
from __future__ import annotations

import math

import torch
import torchaudio.functional as AF
from torch import nn

from .config import FeatureConfig


class MFCC(nn.Module):
    """(batch, samples) float waveform -> (batch, frames, n_mfcc) with frames = cfg.frames_for(samples)."""

    def __init__(self, cfg: FeatureConfig, use_dft: bool = False):
        super().__init__()
        self.cfg = cfg
        self.use_dft = use_dft
        n = torch.arange(cfg.n_fft, dtype=torch.float64)
        window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / cfg.n_fft)              # periodic Hann
        mel = AF.melscale_fbanks(cfg.n_freqs, cfg.f_min, cfg.f_max, cfg.n_mels, cfg.sample_rate,
                                 norm=None, mel_scale="htk")                       # (n_freqs, n_mels)
        # The DFT only needs the bins the mel filters use (up to f_max): half of them at 4 kHz.
        self.n_used = int(torch.nonzero(mel.sum(dim=1)).max()) + 1
        k = torch.arange(self.n_used, dtype=torch.float64)
        angle = 2 * math.pi * torch.outer(k, n) / cfg.n_fft                        # (n_used, n_fft)
        bases = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window          # (2*n_used, n_fft)
        dct = AF.create_dct(cfg.n_mfcc, cfg.n_mels, norm="ortho")                  # (n_mels, n_mfcc)
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("dft_kernel", bases.float().unsqueeze(1), persistent=False)  # (2F, 1, n_fft)
        self.register_buffer("mel_fb", mel[: self.n_used].float().contiguous(), persistent=False)  # (n_used, n_mels)
        self.register_buffer("dct", dct.float(), persistent=False)

    def power(self, wave: torch.Tensor, bins: int | None = None) -> torch.Tensor:
        """(batch, samples) -> power spectrum of the bins the mel filters use (batch, frames, n_used),
        or of the first ``bins`` bins (FFT path only)."""
        cfg = self.cfg
        if self.use_dft:
            spec = torch.nn.functional.conv1d(wave.unsqueeze(1), self.dft_kernel, stride=cfg.hop_length)
            re, im = spec[:, :self.n_used], spec[:, self.n_used:]                   # (batch, F, frames)
            return (re * re + im * im).transpose(1, 2)
        spec = torch.stft(wave, cfg.n_fft, cfg.hop_length, window=self.window, center=False,
                          return_complex=True)[:, :bins or self.n_used]             # (batch, bins, frames)
        # re^2 + im^2 as the real part of spec * conj(spec): a third of abs().pow(2)'s time on a CPU
        return (spec * spec.conj()).real.transpose(1, 2).contiguous()

    def warped_filterbank(self, warp: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Vocal tract length perturbation: (batch,) factors -> per-item mel filterbanks
        (batch, bins, n_mels) whose filters sit at ``warp`` times their usual frequencies, so a
        voice's formants look as if its vocal tract were 1/warp as long. Piecewise-linear
        interpolation of the triangles along the frequency axis; training only."""
        n_freqs = self.cfg.n_freqs
        bins = min(n_freqs, int(math.ceil(self.n_used * float(warp.max()))) + 2)
        # Rows from n_used on are zero (the filters end at f_max): two zero rows stand for them all.
        rows = torch.nn.functional.pad(self.mel_fb, (0, 0, 0, 2))                   # (n_used + 2, n_mels)
        src = torch.arange(bins, device=warp.device).float().unsqueeze(0) / warp.unsqueeze(1)   # (batch, bins)
        src = src.clamp(max=float(self.n_used))
        lo = src.floor().long()
        frac = (src - lo).unsqueeze(-1)
        fb = rows[lo] * (1 - frac) + rows[lo + 1] * frac
        return fb, bins

    def forward(self, wave: torch.Tensor, warp: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, samples) -> (batch, frames, n_mfcc); ``warp`` (batch,): VTLP factors (training)."""
        if warp is None:
            mel = self.power(wave.float()) @ self.mel_fb                            # (batch, frames, n_mels)
        else:
            if self.use_dft:
                raise ValueError("VTLP needs the FFT path (use_dft=False)")
            fb, bins = self.warped_filterbank(warp)
            mel = torch.bmm(self.power(wave.float(), bins), fb)
        return torch.log(mel + self.cfg.log_eps) @ self.dct                         # (batch, frames, n_mfcc)


def time_warp(feats: torch.Tensor, max_shift: int) -> torch.Tensor:
    """SpecAugment's time warp on (batch, frames, n_mfcc), each item its own warp: a random anchor
    frame c (at least ``max_shift`` from either end) moves by d in [-max_shift, max_shift], the
    frames before it are stretched linearly onto [0, c + d] and those after onto [c + d, frames - 1]
    (linear interpolation between frames). Real speakers lengthen and shorten the parts of a word
    unevenly; speed perturbation scales the whole word alike. Identity for ``max_shift`` 0."""
    b, t, f = feats.shape
    if max_shift <= 0 or t <= 2 * max_shift + 1:
        return feats
    dev = feats.device
    c = max_shift + torch.rand(b, 1, device=dev) * (t - 1 - 2 * max_shift)       # anchor (source)
    d = (torch.rand(b, 1, device=dev) * 2 - 1) * max_shift                       # its displacement
    tt = torch.arange(t, device=dev).float().unsqueeze(0)                        # output frame
    src = torch.where(tt < c + d, tt * c / (c + d), c + (tt - c - d) * (t - 1 - c) / (t - 1 - c - d))
    src = src.clamp(0, t - 1)
    lo = src.floor().long().clamp(max=t - 2)
    frac = (src - lo).unsqueeze(-1)
    gather = lambda i: torch.gather(feats, 1, i.unsqueeze(-1).expand(b, t, f))
    return gather(lo) * (1 - frac) + gather(lo + 1) * frac


def spec_augment(feats: torch.Tensor, time_masks: int, time_width: int, freq_masks: int,
                 freq_width: int, fill: torch.Tensor | None = None) -> torch.Tensor:
    """SpecAugment masks on (batch, frames, n_mfcc), each item its own random masks.

    Masked cells are set to ``fill`` (a per-coefficient value, e.g. the training mean, so a mask
    looks like an average frame rather than a loud zero), or to 0.
    """
    b, t, f = feats.shape
    dev = feats.device
    keep = torch.ones(b, t, f, dtype=torch.bool, device=dev)
    tt = torch.arange(t, device=dev).view(1, t, 1)
    ff = torch.arange(f, device=dev).view(1, 1, f)
    for _ in range(time_masks):
        w = torch.randint(0, time_width + 1, (b, 1, 1), device=dev)
        s = (torch.rand(b, 1, 1, device=dev) * (t - w).clamp(min=1)).long()
        keep &= ~((tt >= s) & (tt < s + w))
    for _ in range(freq_masks):
        w = torch.randint(0, freq_width + 1, (b, 1, 1), device=dev)
        s = (torch.rand(b, 1, 1, device=dev) * (f - w).clamp(min=1)).long()
        keep &= ~((ff >= s) & (ff < s + w))
    filler = torch.zeros((), device=dev) if fill is None else fill.view(1, 1, f)
    return torch.where(keep, feats, filler)
