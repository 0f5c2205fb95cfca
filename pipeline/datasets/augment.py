"""Batch-level waveform augmentation, run on the training device (training only).

Every step works on the whole batch at once, each clip drawing its own random values:

1. speed/pitch perturbation and placement of the word anywhere in the window (or cut to a
   fragment at its edge, relabelled ``_unknown_``): one resampling by linear interpolation;
2. channel: random low-pass 3.4-8 kHz (a microphone or an 8 kHz recording has nothing above its
   band), random high-pass, random spectral tilt (EQ), and room reverberation (a synthetic
   exponentially decaying impulse response), all in one FFT;
3. background noise from the noise bank at a random SNR;
4. gain and occasional hard clipping;
5. trimmed recordings: a share of the clips is cut to the word and a short random margin, digital
   silence elsewhere, as a short recording padded to the window (what ``fit_to_window`` gives).

SpecAugment on the features lives in pipeline/features.py.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..config import AugmentConfig, FeatureConfig


def _fast_fft_size(n: int) -> int:
    """The smallest 2^a * 3^b * 5^c >= n: FFT sizes pocketfft/cuFFT handle fast."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


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
        self.n_fft = _fast_fft_size(n + int(0.4 * feats.sample_rate))               # room for the reverb tail
        self.freqs = torch.fft.rfftfreq(self.n_fft, 1.0 / feats.sample_rate).to(self.device)
        self.log2f = torch.log2(self.freqs.clamp(min=50.0) / 1000.0)                 # tilt axis, octaves re 1 kHz
        self.log2f_unit = (self.log2f - self.log2f[0]) / (self.log2f[-1] - self.log2f[0])  # EQ axis, 0..1

    def word_bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, samples) -> first and last sample (batch,) of the 10-ms frames within 30 dB
        of the clip's loudest frame: where the word is."""
        b, n = x.shape
        hop = self.feats.sample_rate // 100
        e = x[:, : n - n % hop].reshape(b, -1, hop).pow(2).mean(-1)                      # (batch, frames)
        active = e > e.amax(dim=1, keepdim=True) * 1e-3
        idx = torch.arange(e.shape[1], device=x.device)
        first = torch.where(active, idx, e.shape[1]).amin(dim=1)
        last = torch.where(active, idx, -1).amax(dim=1)
        return (first * hop).float(), ((last + 1) * hop).float()

    def speed_and_shift(self, x: torch.Tensor, keyword: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Speed perturbation and placement, one linear-interpolation resampling.

        With ``free_position`` each word lands anywhere it fits in the window (streaming windows
        see words at every offset); else it moves by up to +-``shift_ms``. With ``keyword``
        (batch,) bool, a ``partial_word_prob`` share of those clips is placed so that only
        ``partial_keep`` of the word is inside the window (its head at the window's end or its tail
        at the start): what a stream sees while a word enters or leaves. -> (audio, cut (batch,)
        bool: the clips cut so, which the caller relabels ``_unknown_``).
        """
        b, n = x.shape
        dev = x.device
        rate = _uniform(self.cfg.speed, b, dev)
        cut = torch.zeros(b, dtype=torch.bool, device=dev)
        if self.cfg.free_position:
            s, e = self.word_bounds(x)
            length = (e - s).clamp(min=1.0) / rate                                      # output samples
            lo, hi = torch.minimum(n - length, torch.zeros_like(length)), (n - length).clamp(min=0.0)
            u = lo + (hi - lo) * torch.rand(b, device=dev)                              # output word start
            if keyword is not None and self.cfg.partial_word_prob > 0:
                cut = keyword & (torch.rand(b, device=dev) < self.cfg.partial_word_prob) & (e > s)
                keep = _uniform(self.cfg.partial_keep, b, dev) * length
                head = torch.rand(b, device=dev) < 0.5
                u = torch.where(cut, torch.where(head, n - keep, keep - length), u)
            shift = (u - n / 2) * rate + n / 2 - s
        else:
            shift = _uniform((-1.0, 1.0), b, dev) * self.cfg.shift_ms * 1e-3 * self.feats.sample_rate
            if tuple(self.cfg.speed) == (1.0, 1.0) and self.cfg.shift_ms == 0:
                return x, cut                                        # neither configured: the clip as it is
        pos = (torch.arange(n, device=dev).float() - n / 2) * rate.unsqueeze(1) + n / 2 + shift.unsqueeze(1)
        # output sample i = input at fractional position pos[i], linear interpolation, zero outside
        # the clip: grid_sample's one kernel (a third of the time of floor/gather/blend on a CPU)
        grid = torch.stack([pos * (2.0 / (n - 1)) - 1.0, torch.zeros_like(pos)], dim=-1)  # (batch, n, 2)
        y = torch.nn.functional.grid_sample(x.view(b, 1, 1, n), grid.unsqueeze(1), mode="bilinear",
                                            padding_mode="zeros", align_corners=True)
        return y.view(b, n), cut

    def channel(self, x: torch.Tensor) -> torch.Tensor:
        """Band/EQ on ``band_prob`` of the clips and reverb on ``reverb_prob``, one FFT for both;
        the filters are built only for the clips that get them."""
        b, n = x.shape
        dev, f = x.device, self.freqs
        band = torch.nonzero(torch.rand(b, device=dev) < self.cfg.band_prob).squeeze(1)
        reverb = torch.nonzero(torch.rand(b, device=dev) < self.cfg.reverb_prob).squeeze(1)
        if len(band) == 0 and len(reverb) == 0:
            return x
        spec = torch.fft.rfft(x, self.n_fft)
        if len(band):
            k = len(band)
            cutoff = _uniform((3400.0, 8000.0), k, dev).unsqueeze(1)
            lowpass = torch.sigmoid((cutoff - f) / (0.03 * cutoff))
            highpass = torch.sigmoid((f - _uniform((20.0, 300.0), k, dev).unsqueeze(1)) / 20.0)
            tilt_db = _uniform((-4.0, 4.0), k, dev).unsqueeze(1) * self.log2f
            if self.cfg.eq_db > 0:           # a smooth random EQ curve over log frequency (microphone colour)
                j = torch.arange(1, 4, device=dev).float().view(1, 3, 1)
                amp = _uniform((-1.0, 1.0), 3 * k, dev).view(k, 3, 1) / j
                phase = _uniform((0.0, 2 * math.pi), 3 * k, dev).view(k, 3, 1)
                curve = amp * torch.cos(math.pi * j * self.log2f_unit.view(1, 1, -1) + phase)  # (k, 3, freqs)
                tilt_db = tilt_db + self.cfg.eq_db * curve.sum(1)
            spec[band] = spec[band] * (lowpass * highpass * torch.exp(tilt_db * (math.log(10) / 20)))
        if len(reverb):
            k, sr = len(reverb), self.feats.sample_rate
            length = int(0.4 * sr)
            t = torch.arange(length, device=dev).float() / sr
            rt60 = _uniform((0.1, 0.6), k, dev).unsqueeze(1)
            rir = torch.randn(k, length, device=dev) * torch.exp(-6.9 * t / rt60)
            rir[:, 0] = 0.0
            rir = rir / rir.norm(dim=1, keepdim=True) * _uniform((0.2, 0.8), k, dev).unsqueeze(1)
            rir[:, 0] = 1.0                                                          # direct path
            spec[reverb] = spec[reverb] * torch.fft.rfft(rir, self.n_fft)
        return torch.fft.irfft(spec, self.n_fft)[:, :n]

    def add_noise(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise is None:
            return x
        b, n = x.shape
        starts = torch.randint(0, self.noise.numel() - n, (b,), device=x.device)
        noise = self.noise.unfold(0, n, 1)[starts]           # (batch, n): rows of a view, no index array
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

    def trim_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """(batch, samples) clean placed words -> (batch, samples) float mask that keeps, on
        ``trim_prob`` of the clips, the word plus a random ``trim_margin_ms`` on each side (1 elsewhere
        and on the other clips); None when no clip is trimmed. With ``trim_prob`` 0 it draws no random
        numbers, so training without it is what it was before the option existed."""
        if self.cfg.trim_prob <= 0:
            return None
        b, n = x.shape
        dev = x.device
        trim = torch.rand(b, device=dev) < self.cfg.trim_prob
        if not bool(trim.any()):
            return None
        s, e = self.word_bounds(x)
        sr = self.feats.sample_rate
        lo = s - _uniform(self.cfg.trim_margin_ms, b, dev) * 1e-3 * sr
        hi = e + _uniform(self.cfg.trim_margin_ms, b, dev) * 1e-3 * sr
        t = torch.arange(n, device=dev).float().unsqueeze(0)
        keep = (t >= lo.unsqueeze(1)) & (t < hi.unsqueeze(1))
        return (keep | ~trim.unsqueeze(1)).float()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, keyword: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, samples) -> (augmented (batch, samples), cut (batch,) bool); see speed_and_shift."""
        x, cut = self.speed_and_shift(x, keyword)
        keep = self.trim_mask(x)
        x = self.channel(x)
        x = self.add_noise(x)
        x = self.gain_and_clip(x)
        return (x if keep is None else x * keep), cut
