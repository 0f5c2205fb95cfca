"""Batch-level waveform augmentation, run on the training device (training only).

Every step works on the whole batch at once, each clip drawing its own random values:

1. speed/pitch perturbation and time shift: one resampling by linear interpolation;
2. channel: random low-pass 3.4-8 kHz (a microphone or an 8 kHz recording has nothing above its
   band), random high-pass, random spectral tilt (EQ), and room reverberation (a synthetic
   exponentially decaying impulse response), all in one FFT;
3. background noise from the noise bank at a random SNR;
4. gain and occasional hard clipping.

SpecAugment on the features lives in pipeline/features.py.
"""
from __future__ import annotations

import numpy as np
import torch

from ..config import AugmentConfig, FeatureConfig


def _uniform(lo_hi: tuple[float, float], n: int, device) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, device=device)


class Augmenter:
    """(batch, samples) float32 waveform -> same shape, augmented. ``generator`` seeds nothing global."""

    def __init__(self, cfg: AugmentConfig, feats: FeatureConfig, noise_bank: list[np.ndarray],
                 device: torch.device | str):
        self.cfg, self.feats, self.device = cfg, feats, torch.device(device)
        n = feats.clip_samples
        bank = [x for x in noise_bank if len(x) >= n]
        self.noise = torch.from_numpy(np.concatenate(bank)).to(self.device) if bank else None
        self.n_fft = 1 << int(np.ceil(np.log2(n + int(0.4 * feats.sample_rate))))   # room for the reverb tail
        self.freqs = torch.fft.rfftfreq(self.n_fft, 1.0 / feats.sample_rate).to(self.device)

    def speed_and_shift(self, x: torch.Tensor) -> torch.Tensor:
        b, n = x.shape
        rate = _uniform(self.cfg.speed, b, x.device).unsqueeze(1)
        shift = _uniform((-1.0, 1.0), b, x.device).unsqueeze(1) * self.cfg.shift_ms * 1e-3 * self.feats.sample_rate
        pos = (torch.arange(n, device=x.device).float() - n / 2) * rate + n / 2 - shift   # (b, n)
        lo = pos.floor().long()
        frac = pos - lo
        valid = (lo >= 0) & (lo < n - 1)
        lo = lo.clamp(0, n - 2)
        y = torch.gather(x, 1, lo) * (1 - frac) + torch.gather(x, 1, lo + 1) * frac
        return y * valid

    def channel(self, x: torch.Tensor) -> torch.Tensor:
        b, n = x.shape
        dev, f = x.device, self.freqs
        gain = torch.ones(b, f.numel(), device=dev)
        band = (torch.rand(b, 1, device=dev) < self.cfg.band_prob).float()
        cutoff = _uniform((3400.0, 8000.0), b, dev).unsqueeze(1)
        lowpass = torch.sigmoid((cutoff - f) / (0.03 * cutoff))
        highpass = torch.sigmoid((f - _uniform((20.0, 300.0), b, dev).unsqueeze(1)) / 20.0)
        tilt_db = _uniform((-4.0, 4.0), b, dev).unsqueeze(1) * torch.log2(f.clamp(min=50.0) / 1000.0)
        shaped = lowpass * highpass * 10 ** (tilt_db / 20)
        gain = band * shaped + (1 - band) * gain
        spec = torch.fft.rfft(x, self.n_fft) * gain
        reverb = torch.rand(b, device=dev) < self.cfg.reverb_prob
        if reverb.any():
            sr = self.feats.sample_rate
            length = int(0.4 * sr)
            t = torch.arange(length, device=dev).float() / sr
            rt60 = _uniform((0.1, 0.6), b, dev).unsqueeze(1)
            rir = torch.randn(b, length, device=dev) * torch.exp(-6.9 * t / rt60)
            rir[:, 0] = 0.0
            rir = rir / rir.norm(dim=1, keepdim=True) * _uniform((0.2, 0.8), b, dev).unsqueeze(1)
            rir[:, 0] = 1.0                                                          # direct path
            wet = torch.fft.rfft(rir, self.n_fft)
            spec = torch.where(reverb.unsqueeze(1), spec * wet, spec)
        return torch.fft.irfft(spec, self.n_fft)[:, :n]

    def add_noise(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise is None:
            return x
        b, n = x.shape
        starts = torch.randint(0, self.noise.numel() - n, (b, 1), device=x.device)
        noise = self.noise[starts + torch.arange(n, device=x.device)]
        p_sig = x.pow(2).mean(dim=1, keepdim=True).clamp(min=1e-10)
        snr = _uniform(self.cfg.snr_db, b, x.device).unsqueeze(1)
        scale = torch.sqrt(p_sig / 10 ** (snr / 10))
        use = (torch.rand(b, 1, device=x.device) < self.cfg.noise_prob).float()
        return x + use * scale * noise

    def gain_and_clip(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = x * 10 ** (_uniform(self.cfg.gain_db, b, x.device).unsqueeze(1) / 20)
        peak = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-6)
        level = peak * _uniform((0.2, 0.6), b, x.device).unsqueeze(1)
        clip = torch.rand(b, 1, device=x.device) < self.cfg.clip_prob
        x = torch.where(clip, torch.maximum(torch.minimum(x, level), -level), x)
        return x.clamp(-1.0, 1.0)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, samples)."""
        x = self.speed_and_shift(x)
        x = self.channel(x)
        x = self.add_noise(x)
        return self.gain_and_clip(x)
