"""The classifier's frame stacking: what it computes, its export, and old configs."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from pipeline.config import FeatureConfig, ModelConfig, RunConfig
from pipeline.export import _export
from pipeline.model import BiLSTMClassifier, FramesClassifier, WaveformClassifier


@pytest.mark.parametrize("k", [1, 2, 3])
def test_stack_joins_neighbouring_frames_dropping_the_oldest(k):
    m = BiLSTMClassifier(ModelConfig(hidden=8, frame_stack=k))
    x = torch.randn(3, 98, 40)
    got = m.stack(x)
    drop = 98 % k
    assert got.shape == (3, 98 // k, 40 * k)
    ref = x[:, drop:].reshape(3, 98 // k, k * 40)              # step t = frames drop+k*t .. drop+k*t+k-1
    assert torch.equal(got, ref)
    assert m.lstm.input_size == 40 * k


@pytest.mark.parametrize("k", [2, 3])
def test_stacked_model_exports_and_matches_pytorch(k, tmp_path):
    torch.manual_seed(0)
    f = FeatureConfig()
    m = BiLSTMClassifier(ModelConfig(hidden=16, frame_stack=k)).eval()
    _export(FramesClassifier(m), torch.zeros(2, f.n_frames, f.n_mfcc), tmp_path / "f.onnx", "frames", "probs",
            {0: ("batch", 1)}, {})
    _export(WaveformClassifier(f, m), torch.zeros(2, f.clip_samples), tmp_path / "w.onnx", "waveform", "probs",
            {0: ("batch", 1)}, {})
    feats = np.random.default_rng(0).standard_normal((3, f.n_frames, f.n_mfcc)).astype(np.float32)
    wave = (np.random.default_rng(1).standard_normal((5, f.clip_samples)) * 0.1).astype(np.float32)
    with torch.no_grad():
        ref_f = FramesClassifier(m)(torch.from_numpy(feats)).numpy()
        ref_w = WaveformClassifier(f, m, use_dft=False)(torch.from_numpy(wave)).numpy()
    got_f = ort.InferenceSession(str(tmp_path / "f.onnx")).run(None, {"frames": feats})[0]
    got_w = ort.InferenceSession(str(tmp_path / "w.onnx")).run(None, {"waveform": wave})[0]
    assert np.abs(got_f - ref_f).max() < 1e-5 and np.abs(got_w - ref_w).max() < 1e-4


def test_config_saved_before_frame_stacking_loads_as_one_frame_per_step():
    cfg = RunConfig(labels=("a", "b"), model=ModelConfig(n_classes=2, frame_stack=1))
    d = cfg.to_dict()
    del d["model"]["frame_stack"]
    assert RunConfig.from_dict(d).model.frame_stack == 1
    assert RunConfig.from_dict(RunConfig(labels=("a", "b"), model=ModelConfig(n_classes=2)).to_dict()).model.frame_stack == 2
