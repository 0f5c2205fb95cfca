"""Background noise: synthetic generators and the noise bank used for silence clips and augmentation.

The synthetic kinds stand in for real recordings on a machine with no internet: coloured noise
(white, pink, brown), mains hum with harmonics, a modulated fan/air-conditioner band, and random
clicks/impacts. ``kws synth`` adds babble made from the TTS voices. Real recordings
(``--noise-dir``, or a dataset's ``_background_noise_``) are loaded the same way.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..audio import AudioError, read_audio


def coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown): (n,) float32, unit RMS."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.arange(n // 2 + 1, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / f ** (exponent / 2.0), n)
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def hum(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum (50 or 60 Hz and harmonics) over faint pink noise: (n,), unit RMS."""
    t = np.arange(n) / sr
    base = rng.choice([50.0, 60.0])
    x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3)) for k in range(1, 8))
    x = x + 0.1 * coloured_noise(n, 1.0, rng)
    return (x / np.sqrt(np.mean(x ** 2))).astype(np.float32)


def fan(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Band-limited noise with slow amplitude modulation, like a fan or air conditioner: (n,)."""
    x = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    centre = rng.uniform(200, 1500)
    x *= np.exp(-0.5 * (np.log(np.maximum(f, 1.0) / centre) / 0.8) ** 2)
    y = np.fft.irfft(x, n) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * np.arange(n) / sr))
    return (y / np.sqrt(np.mean(y ** 2))).astype(np.float32)


def clicks(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Sparse decaying impacts (keyboard, dishes) over faint brown noise: (n,)."""
    y = 0.05 * coloured_noise(n, 2.0, rng)
    decay = np.exp(-np.arange(int(0.05 * sr)) / (0.008 * sr))
    for pos in rng.integers(0, n - len(decay), size=max(1, int(n / sr * 3))):
        y[pos:pos + len(decay)] += rng.uniform(0.2, 1.0) * decay * rng.standard_normal(len(decay))
    return (y / np.sqrt(np.mean(y ** 2))).astype(np.float32)


def synthetic_noises(sr: int, seconds: float, seed: int) -> dict[str, np.ndarray]:
    """The built-in noise kinds, ``seconds`` long each: name -> (samples,) float32 at unit RMS."""
    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    return {
        "white_noise": coloured_noise(n, 0.0, rng),
        "pink_noise": coloured_noise(n, 1.0, rng),
        "brown_noise": coloured_noise(n, 2.0, rng),
        "mains_hum": hum(n, sr, rng),
        "fan": fan(n, sr, rng),
        "clicks": clicks(n, sr, rng),
    }


def load_noise_bank(files: list[Path], sr: int, min_seconds: float = 1.0) -> list[np.ndarray]:
    """Read noise recordings (float32 mono at ``sr``), each normalised to unit RMS.

    Files shorter than ``min_seconds`` or digitally silent are skipped; a file that is not audio
    raises AudioError naming it.
    """
    bank = []
    for f in files:
        x = read_audio(f, sr)
        rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
        if len(x) >= min_seconds * sr and rms > 1e-5:
            bank.append((x / rms).astype(np.float32))
    return bank


def noise_bank_or_synthetic(files: list[Path], sr: int, seed: int) -> list[np.ndarray]:
    """The recordings in ``files``; the synthetic kinds when there are none."""
    bank = load_noise_bank(files, sr)
    return bank or list(synthetic_noises(sr, 30.0, seed).values())


def silence_clips(bank: list[np.ndarray], count: int, samples: int, seed: int) -> np.ndarray:
    """``count`` "silence" clips cut from the noise bank at random low levels: (count, samples) float32.

    One in ten is near-digital silence; the rest are noise at -60 to -20 dBFS RMS.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((count, samples), np.float32)
    for k in range(count):
        src = bank[rng.integers(len(bank))]
        start = rng.integers(0, max(1, len(src) - samples))
        seg = src[start:start + samples]
        level = 10 ** (rng.uniform(-60, -20) / 20) if rng.random() > 0.1 else 10 ** (-80 / 20)
        out[k, :len(seg)] = seg * level
    return out


__all__ = ["AudioError", "coloured_noise", "synthetic_noises", "load_noise_bank",
           "noise_bank_or_synthetic", "silence_clips"]
