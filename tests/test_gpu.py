"""CUDA tests: the GPU training path equals the CPU one where it should, and `kws train --device cuda`
runs end to end (train -> checkpoint -> export and evaluate on the CPU).

Self-contained (no speech synthesiser needed, so they also run on a bare GPU machine); every test is
marked ``gpu`` and skips where no CUDA device is present.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import kws

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SR = 16000


def _tone_word(k: int, rng: np.random.Generator) -> np.ndarray:
    """A 'word' of class k: a 0.5 s two-tone chirp whose pitch depends on k, in noise; (16000,) float32."""
    t = np.arange(SR // 2) / SR
    f0 = 300 * (k + 1) * rng.uniform(0.95, 1.05)
    word = np.sin(2 * np.pi * f0 * t * (1 + 0.5 * t)) + 0.5 * np.sin(2 * np.pi * 2.5 * f0 * t)
    word *= np.hanning(len(t))
    x = 0.01 * rng.standard_normal(SR)
    start = rng.integers(2000, SR - len(t) - 2000)
    x[start:start + len(t)] += 0.3 * word
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def tone_data(tmp_path_factory):
    """ROOT/<word>/spk<j>_nohash_<n>.wav: 3 words x 24 'speakers' x 2 takes (hash-split by speaker)."""
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    for k, word in enumerate(("low", "mid", "high")):
        (root / word).mkdir()
        for j in range(24):
            for n in range(2):
                sf.write(root / word / f"spk{j}_nohash_{n}.wav", _tone_word(k, rng), SR, subtype="PCM_16")
    return root


def test_mfcc_on_cuda_equals_cpu():
    from pipeline.config import FeatureConfig
    from pipeline.features import MFCC
    torch.manual_seed(0)
    wave = 0.1 * torch.randn(8, SR)
    for use_dft in (False, True):
        m = MFCC(FeatureConfig(), use_dft=use_dft)
        cpu = m(wave)
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):     # the DFT path is a conv1d
            gpu = m.cuda()(wave.cuda()).cpu()
        assert gpu.shape == cpu.shape
        assert torch.allclose(gpu, cpu, atol=2e-3), (use_dft, (gpu - cpu).abs().max())


def test_cudnn_lstm_equals_cpu_lstm():
    from pipeline.config import ModelConfig
    from pipeline.model import BiLSTMClassifier
    torch.manual_seed(0)
    model = BiLSTMClassifier(ModelConfig(hidden=64, layers=2, n_classes=5)).eval()
    feats = torch.randn(4, 98, 40)
    cpu = model(feats)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False), torch.no_grad():
        gpu = model.cuda()(feats.cuda()).cpu()
    assert torch.allclose(gpu, cpu, atol=1e-4), (gpu - cpu).abs().max()


def test_bf16_train_step_learns_on_cuda():
    """The exact step `kws train` runs (bf16 autocast, cuDNN LSTM, batch augmentation on the GPU)
    fits a small two-class batch."""
    from pipeline.config import AugmentConfig, FeatureConfig, ModelConfig, TrainConfig
    from pipeline.datasets.augment import Augmenter
    from pipeline.features import MFCC
    from pipeline.model import BiLSTMClassifier
    from pipeline.train_step import TrainStep
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    dev = torch.device("cuda")
    feats = FeatureConfig()
    y = torch.tensor([0, 1] * 16, device=dev)
    x = torch.from_numpy(np.stack([_tone_word(int(k), rng) for k in y.cpu()])).to(dev)
    model = BiLSTMClassifier(ModelConfig(hidden=32, layers=1, n_classes=2)).to(dev)
    tc = TrainConfig(augment=AugmentConfig(noise_prob=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    step = TrainStep(model, model, MFCC(feats).to(dev), Augmenter(tc.augment, feats, [], dev), opt, tc, dev)
    assert step.amp
    losses = [step(x, y)[0].item() for _ in range(40)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


def test_kws_train_on_cuda_then_export_and_evaluate_on_cpu(tone_data, tmp_path):
    run = tmp_path / "gpu"
    p = kws("train", "--data", tone_data, "--out", run, "--epochs", "8", "--hidden", "32", "--mfcc-tower", "16", "--layers", "1",
            "--batch-size", "16", "--lr", "1e-2", "--cache-dir", tmp_path / "c", "--device", "cuda")
    assert "device cuda" in p.stdout and "bf16" in p.stdout
    ck = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    assert all(v.device.type == "cpu" for v in ck["model"].values())
    kws("export", run)                                          # on the CPU, from a GPU-trained checkpoint
    kws("evaluate", "--model", run / "model.onnx", "--data", tone_data, "--split", "all", "--json", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["clips"] == 3 * 24 * 2
    assert report["accuracy"] > 0.9, report["accuracy"]
