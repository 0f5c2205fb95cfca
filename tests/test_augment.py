import numpy as np
import torch

from pipeline.config import AugmentConfig, FeatureConfig
from pipeline.datasets.augment import Augmenter
from pipeline.datasets.noise import synthetic_noises


def test_augment_shapes_and_ranges():
    torch.manual_seed(0)
    aug = Augmenter(AugmentConfig(), FeatureConfig(), list(synthetic_noises(16000, 5, 0).values()), "cpu")
    x = torch.randn(16, 16000) * 0.05
    y, cut = aug(x)
    assert not cut.any()                                   # no keyword mask: nothing is cut
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


def test_random_eq_is_a_bounded_smooth_curve_that_differs_per_clip():
    """The channel filter seen through an impulse: in 500-3000 Hz (no band edges there) its gain is the
    tilt (+-4 dB/octave) plus the EQ curve (at most eq_db * (1 + 1/2 + 1/3)), and each clip gets its own."""
    torch.manual_seed(0)
    feats = FeatureConfig()
    x = torch.zeros(16, 16000)
    x[:, 8000] = 1.0                     # mid-window: the zero-phase filter's response fits around it
    gains = {}
    for eq in (0.0, 6.0):
        torch.manual_seed(1)
        aug = Augmenter(AugmentConfig(band_prob=1.0, reverb_prob=0.0, eq_db=eq), feats, [], "cpu")
        f = torch.fft.rfftfreq(16000, 1 / 16000)
        db = 20 * torch.log10(torch.fft.rfft(aug.channel(x)).abs().clamp(min=1e-9))
        gains[eq] = db[:, (f > 500) & (f < 3000)]
        octaves = torch.log2(f[(f > 500) & (f < 3000)] / 1000).abs()
    bound = 4 * octaves + 6.0 * (1 + 1 / 2 + 1 / 3) + 0.5
    assert (gains[6.0].abs() <= bound).all()
    assert (gains[0.0].abs() <= 4 * octaves + 0.5).all()
    assert (gains[6.0] - gains[0.0]).abs().amax(1).min() > 0.5        # every clip is coloured differently
    assert gains[6.0].std(0).mean() > 1.0
    assert gains[6.0].diff(dim=1).abs().max() < 0.5                  # smooth: no jumps between bins


def test_deterministic_under_seed():
    aug = Augmenter(AugmentConfig(), FeatureConfig(), list(synthetic_noises(16000, 5, 0).values()), "cpu")
    x = torch.randn(4, 16000) * 0.05
    torch.manual_seed(3)
    a, _ = aug(x)
    torch.manual_seed(3)
    assert torch.equal(a, aug(x)[0])


def _word_clips(b: int, start: int, length: int) -> torch.Tensor:
    """(b, 16000): silence with a 300-Hz tone burst at [start, start + length)."""
    x = torch.zeros(b, 16000)
    x[:, start:start + length] = 0.3 * torch.sin(torch.arange(length) * 2 * torch.pi * 300 / 16000)
    return x


def test_word_bounds_find_the_word():
    aug = Augmenter(AugmentConfig(), FeatureConfig(), [], "cpu")
    s, e = aug.word_bounds(_word_clips(2, 4000, 5000))
    assert torch.allclose(s, torch.tensor([4000.0, 4000.0]), atol=160)
    assert torch.allclose(e, torch.tensor([9000.0, 9000.0]), atol=160)


def test_free_position_keeps_the_whole_word_and_moves_it():
    torch.manual_seed(0)
    cfg = AugmentConfig(speed=(1.0, 1.0), free_position=True, partial_word_prob=0.0)
    aug = Augmenter(cfg, FeatureConfig(), [], "cpu")
    y, cut = aug.speed_and_shift(_word_clips(64, 6000, 4000), torch.ones(64, dtype=torch.bool))
    s, e = aug.word_bounds(y)
    assert not cut.any()
    energy = y.pow(2).sum(1) / _word_clips(1, 6000, 4000).pow(2).sum()
    assert torch.allclose(energy, torch.ones(64), atol=0.02)            # nothing fell off the window
    assert s.min() < 1500 and e.max() > 14500                           # words reach both ends


def test_partial_words_are_cut_and_flagged():
    torch.manual_seed(0)
    cfg = AugmentConfig(speed=(1.0, 1.0), free_position=True, partial_word_prob=1.0, partial_keep=(0.2, 0.4))
    aug = Augmenter(cfg, FeatureConfig(), [], "cpu")
    keyword = torch.arange(64) % 2 == 0
    x = _word_clips(64, 6000, 4000)
    y, cut = aug.speed_and_shift(x, keyword)
    assert torch.equal(cut, keyword)                                    # only keyword clips are cut
    kept = y.pow(2).sum(1) / x.pow(2).sum(1)
    assert ((kept[cut] > 0.17) & (kept[cut] < 0.43)).all()
    assert torch.allclose(kept[~cut], torch.ones(32), atol=0.02)


def test_trimmed_recordings_keep_the_word_and_a_margin_and_silence_the_rest():
    torch.manual_seed(0)
    noise = [np.random.default_rng(0).standard_normal(48000).astype(np.float32)]
    cfg = AugmentConfig(speed=(1.0, 1.0), shift_ms=0.0, noise_prob=1.0, reverb_prob=0.0, band_prob=0.0,
                        clip_prob=0.0, trim_prob=0.5, trim_margin_ms=(20.0, 100.0))
    aug = Augmenter(cfg, FeatureConfig(), noise, "cpu")
    y, _ = aug(_word_clips(64, 6000, 4000))
    nz = y != 0
    first = torch.where(nz, torch.arange(16000), 16000).amin(1)
    last = torch.where(nz, torch.arange(16000), -1).amax(1)
    trimmed = (first > 0) | (last < 15999)
    assert 16 < int(trimmed.sum()) < 48                                   # about trim_prob of the clips
    # word at 6000-10000 (bounds found on 10-ms frames), margin 20-100 ms = 320-1600 samples
    assert (first[trimmed] >= 6000 - 1600 - 160).all() and (first[trimmed] <= 6000 - 320 + 160).all()
    assert (last[trimmed] >= 10000 + 320 - 160).all() and (last[trimmed] <= 10000 + 1600 + 160).all()
    assert nz[~trimmed].all()                                             # the others keep their noise


def test_speed_and_shift_is_linear_interpolation_at_the_drawn_positions():
    """Each output sample is the input linearly interpolated at (i - n/2) * rate + n/2 + shift,
    zero beyond one sample outside the clip (numpy's interp as the reference)."""
    from pipeline.datasets.augment import _uniform
    cfg = AugmentConfig(speed=(0.85, 1.15), shift_ms=100.0)
    aug = Augmenter(cfg, FeatureConfig(), [], "cpu")
    t = torch.arange(16000) / 16000
    x = sum(a * torch.sin(2 * np.pi * f * t + f) for a, f in ((0.3, 150.0), (0.1, 700.0), (0.05, 2100.0)))
    x = x * torch.linspace(0.5, 1.5, 6).unsqueeze(1)       # (6, 16000): each row its own level
    torch.manual_seed(3)
    y, _ = aug.speed_and_shift(x)
    torch.manual_seed(3)                                   # the same draws, in the same order
    rate, shift = _uniform(cfg.speed, 6, "cpu"), _uniform((-1.0, 1.0), 6, "cpu") * 0.1 * 16000
    n = 16000
    for i in range(6):
        pos = (np.arange(n) - n / 2) * rate[i].item() + n / 2 + shift[i].item()
        want = np.interp(pos, np.arange(n), x[i].numpy(), left=0.0, right=0.0)
        inside = (pos >= 0) & (pos <= n - 1)
        assert inside.sum() > 0.8 * n
        # positions are float32 (an ulp at 16,000 is 0.001 sample): the error is slope x 0.001
        np.testing.assert_allclose(y[i].numpy()[inside], want[inside], atol=5e-4)
        assert np.all(y[i].numpy()[(pos < -1) | (pos > n)] == 0)
