"""Parity of the MFCC front-end: FFT vs in-graph DFT, torchaudio, librosa, batched vs per-item."""
import librosa
import numpy as np
import pytest
import torch
import torchaudio

from pipeline.audio import read_audio
from pipeline.config import FeatureConfig
from pipeline.features import MFCC, spec_augment

CFG = FeatureConfig()


@pytest.fixture(scope="module")
def speech(real_clips):
    """Real synthesised speech clips: (batch, 16000) float32."""
    return torch.from_numpy(np.stack([read_audio(p, 16000)[:16000] for p in real_clips[:4]]))


def test_shapes():
    x = torch.randn(3, 16000) * 0.1
    assert MFCC(CFG)(x).shape == (3, 98, 40)
    assert MFCC(CFG)(torch.randn(2, 16000 + 160)).shape == (2, 99, 40)


def test_dft_equals_fft(speech):
    a = MFCC(CFG, use_dft=False)(speech)
    b = MFCC(CFG, use_dft=True)(speech)
    assert torch.allclose(a, b, atol=1e-4, rtol=0), (a - b).abs().max()


def test_matches_torchaudio(speech):
    ta = torchaudio.transforms.MFCC(sample_rate=16000, n_mfcc=40, log_mels=True, dct_type=2, norm="ortho",
                                    melkwargs=dict(n_fft=400, hop_length=160, n_mels=40, f_min=CFG.f_min, f_max=CFG.f_max,
                                                   center=False, mel_scale="htk", norm=None, power=2.0))
    ref = ta(speech).transpose(1, 2)                           # (batch, frames, n_mfcc)
    for use_dft in (False, True):
        got = MFCC(CFG, use_dft=use_dft)(speech)
        assert torch.allclose(got, ref, atol=1e-4, rtol=0), (use_dft, (got - ref).abs().max())


def test_matches_librosa(speech):
    for x, got in zip(speech.numpy(), MFCC(CFG)(speech).numpy()):
        mel = librosa.feature.melspectrogram(y=x.astype(np.float64), sr=16000, n_fft=400, hop_length=160,
                                             center=False, n_mels=40, fmin=CFG.f_min, fmax=CFG.f_max, htk=True, norm=None,
                                             power=2.0, window="hann")
        ref = librosa.feature.mfcc(S=np.log(mel + 1e-6), n_mfcc=40, dct_type=2, norm="ortho").T
        assert np.abs(got - ref).max() < 1e-3, np.abs(got - ref).max()


def test_batched_equals_per_item(speech):
    m = MFCC(CFG, use_dft=True)
    batched = m(speech)
    for i in range(len(speech)):
        assert torch.allclose(m(speech[i:i + 1])[0], batched[i], atol=1e-4)


def test_snippet_frames_equal_full_clip_frames(speech):
    """Streaming safety: frames of a hop-aligned snippet equal the same frames of the whole clip."""
    m = MFCC(CFG)
    full = m(speech[:1])
    part = m(speech[:1, 160 * 30:160 * 30 + 5000])
    assert torch.allclose(part[0], full[0, 30:30 + part.shape[1]], atol=1e-5)


def test_spec_augment_masks_only_some_cells():
    torch.manual_seed(0)
    f = torch.randn(8, 98, 40)
    fill = torch.full((40,), 7.0)
    out = spec_augment(f, 2, 10, 2, 5, fill=fill)
    masked = out == 7.0
    assert out.shape == f.shape and masked.any() and (~masked).float().mean() > 0.5
    assert torch.equal(out[~masked], f[~masked])


def test_vtlp_identity_warp_and_formant_shift():
    """Warp 1 is the plain front-end; warp > 1 moves a tone's mel peak up, < 1 down."""
    import torch
    from pipeline.config import FeatureConfig
    from pipeline.features import MFCC
    m = MFCC(FeatureConfig())
    x = torch.sin(torch.arange(16000) * 2 * torch.pi * 1000 / 16000).repeat(3, 1)
    assert torch.allclose(m(x, torch.ones(3)), m(x), atol=1e-5)
    fb, bins = m.warped_filterbank(torch.tensor([0.9, 1.0, 1.1]))
    mel = torch.bmm(m.power(x, bins), fb).mean(1)                      # (3, n_mels)
    peaks = mel.argmax(-1)
    assert peaks[0] > peaks[1] > peaks[2]  # filters moved up (warp>1) see 1 kHz in a lower filter


def test_time_warp_moves_an_anchor_and_keeps_the_ends():
    """Warp 0 is the identity; otherwise each item's frames are a monotone re-timing of its own:
    the first and last frames stay, a ramp stays a non-decreasing ramp, a marker frame moves by
    at most the warp, and the values stay within the input's range."""
    from pipeline.features import time_warp
    torch.manual_seed(0)
    f = torch.randn(6, 98, 40)
    assert torch.equal(time_warp(f, 0), f)
    ramp = torch.arange(98.0).view(1, 98, 1).expand(6, 98, 40).contiguous()
    w = time_warp(ramp, 8)
    assert torch.allclose(w[:, 0], ramp[:, 0]) and torch.allclose(w[:, -1], ramp[:, -1], atol=1e-4)
    assert (w[:, 1:] - w[:, :-1] >= -1e-5).all()
    assert (w - ramp).abs().amax() <= 8 + 1e-4 and (w - ramp).abs().amax() > 1.0
    warped = time_warp(f, 8)
    assert warped.amin() >= f.amin() - 1e-6 and warped.amax() <= f.amax() + 1e-6
    marker = torch.zeros(6, 98, 40)
    marker[:, 50] = 1.0
    peak = time_warp(marker, 8)[:, :, 0].argmax(1)
    assert ((peak - 50).abs() <= 9).all()


def test_mixup_mixes_each_clip_with_a_partner():
    from pipeline.train_step import mixup
    torch.manual_seed(0)
    f = torch.randn(16, 98, 40)
    same, none = mixup(f, 0.0)
    assert same is f and none is None
    mixed, (lam, other) = mixup(f, 0.4)
    assert ((lam >= 0.5) & (lam <= 1)).all() and sorted(other.tolist()) == list(range(16))
    expect = lam.view(-1, 1, 1) * f + (1 - lam.view(-1, 1, 1)) * f[other]
    assert torch.allclose(mixed, expect)


def test_time_warp_wider_than_half_the_window_is_a_config_error():
    import pytest
    from pipeline.config import AugmentConfig, ModelConfig, RunConfig, TrainConfig
    from pipeline.errors import ConfigError
    labels, model = ("a", "b"), ModelConfig(n_classes=2)
    ok = RunConfig(labels, model=model, train=TrainConfig(augment=AugmentConfig(time_warp_frames=48)))
    assert ok.train.augment.time_warp_frames == 48                          # 97 < 98 frames
    with pytest.raises(ConfigError, match="time_warp_frames"):
        RunConfig(labels, model=model, train=TrainConfig(augment=AugmentConfig(time_warp_frames=49)))
