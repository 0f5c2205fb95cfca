import numpy as np
import torch

from pipeline.config import AugmentConfig, FeatureConfig
from pipeline.datasets.augment import Augmenter
from pipeline.datasets.noise import synthetic_noises


def test_augment_shapes_and_ranges():
    torch.manual_seed(0)
    aug = Augmenter(AugmentConfig(), FeatureConfig(), list(synthetic_noises(16000, 5, 0).values()), "cpu")
    x = torch.randn(16, 16000) * 0.05
    y = aug(x)
    assert y.shape == x.shape and torch.isfinite(y).all() and y.abs().max() <= 1.0
    assert not torch.allclose(x, y)


def test_noise_at_requested_snr():
    torch.manual_seed(0)
    cfg = AugmentConfig(noise_prob=1.0, snr_db=(10.0, 10.0))
    aug = Augmenter(cfg, FeatureConfig(), [np.random.default_rng(0).standard_normal(48000).astype(np.float32)], "cpu")
    x = torch.sin(torch.arange(16000) * 0.05).repeat(8, 1) * 0.1
    noise = aug.add_noise(x) - x
    snr = 10 * torch.log10(x.pow(2).mean(1) / noise.pow(2).mean(1))
    assert torch.allclose(snr, torch.full_like(snr, 10.0), atol=0.5)


def test_lowpass_removes_high_band():
    torch.manual_seed(0)
    cfg = AugmentConfig(band_prob=1.0, reverb_prob=0.0)
    aug = Augmenter(cfg, FeatureConfig(), [], "cpu")
    x = torch.randn(32, 16000) * 0.1
    y = aug.channel(x)
    spec = torch.fft.rfft(y).abs().pow(2)
    hi = spec[:, 7900:].mean(1) / torch.fft.rfft(x).abs().pow(2)[:, 7900:].mean(1)   # above ~7.9 kHz
    assert (hi < 0.5).float().mean() > 0.8


def test_deterministic_under_seed():
    aug = Augmenter(AugmentConfig(), FeatureConfig(), list(synthetic_noises(16000, 5, 0).values()), "cpu")
    x = torch.randn(4, 16000) * 0.05
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    assert torch.equal(a, aug(x))
