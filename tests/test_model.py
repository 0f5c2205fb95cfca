"""The classifier's frame stacking and spectral convolution: what they compute, their export, and
old configs."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from pipeline.config import FeatureConfig, ModelConfig, RunConfig
from pipeline.errors import ConfigError
from pipeline.export import _export
from pipeline.features import MFCC
from pipeline.model import BiLSTMClassifier, FramesClassifier, WaveformClassifier


@pytest.mark.parametrize("k", [1, 2, 3])
def test_stack_joins_neighbouring_frames_dropping_the_oldest(k):
    m = BiLSTMClassifier(ModelConfig(hidden=8, frame_stack=k, conv_channels=0, mfcc_tower=0))
    x = torch.randn(3, 98, 40)
    got = m.stack(x)
    drop = 98 % k
    assert got.shape == (3, 98 // k, 40 * k)
    ref = x[:, drop:].reshape(3, 98 // k, k * 40)              # step t = frames drop+k*t .. drop+k*t+k-1
    assert torch.equal(got, ref)
    assert m.lstm.input_size == 40 * k


def test_spectral_conv_sees_the_log_mel_spectrum():
    """The inverse DCT gives back the front-end's log-mel frames, mean-removed; a conv whose one
    filter is a centre tap then passes them through ReLU and the max over mel-bin pairs."""
    f = FeatureConfig()
    m = BiLSTMClassifier(ModelConfig(hidden=8, conv_channels=1)).eval()
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal((2, f.clip_samples)).astype(np.float32) * 0.1)
    fe = MFCC(f, use_dft=False)
    logmel = torch.log(fe.power(wave) @ fe.mel_fb + f.log_eps)             # (2, frames, n_mels)
    feats = fe(wave)                                                        # (2, frames, n_mfcc)
    mean, std = feats.mean(dim=(0, 1)), feats.std(dim=(0, 1))
    m.set_normalisation(mean, std)
    spec = (feats - mean) @ m.idct / std.pow(2).mean().sqrt()
    assert torch.allclose(spec * std.pow(2).mean().sqrt(), logmel - mean @ m.idct, atol=1e-3)   # DCT undone
    with torch.no_grad():
        m.conv.weight.zero_()
        m.conv.weight[0, 0, 1, 2] = 1.0
        m.conv.bias.zero_()
        got = m.spectral_conv(m.normalise(feats))
    ref = torch.relu(spec).reshape(2, f.n_frames, f.n_mels // 2, 2).amax(-1)
    assert got.shape == (2, f.n_frames, f.n_mels // 2) and torch.allclose(got, ref, atol=1e-5)
    assert m.lstm.input_size == 2 * (f.n_mels // 2)                        # frame_stack 2 x one channel


def test_spectral_conv_needs_an_invertible_dct():
    with pytest.raises(ConfigError, match="conv_channels"):
        RunConfig(labels=("a", "b"), features=FeatureConfig(n_mfcc=20),
                  model=ModelConfig(n_mfcc=20, n_classes=2, conv_channels=4))
    with pytest.raises(ConfigError, match="conv_channels"):
        ModelConfig(conv_channels=-1)


@pytest.mark.parametrize("k,conv,skip,tower", [(2, 0, False, 0), (3, 0, False, 0), (2, 4, False, 0), (3, 2, True, 0),
                                               (2, 4, False, 12)])
def test_stacked_model_exports_and_matches_pytorch(k, conv, skip, tower, tmp_path):
    torch.manual_seed(0)
    f = FeatureConfig()
    m = BiLSTMClassifier(ModelConfig(hidden=16, frame_stack=k, conv_channels=conv, conv_skip=skip,
                                     mfcc_tower=tower)).eval()
    if conv:
        m.set_normalisation(torch.randn(f.n_mfcc), torch.rand(f.n_mfcc) + 0.5)
        assert m.lstm.input_size == k * (conv * f.n_mfcc // 2 + (f.n_mfcc if skip else 0))
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
    cfg = RunConfig(labels=("a", "b"), model=ModelConfig(n_classes=2, frame_stack=1, conv_channels=0, mfcc_tower=0))
    d = cfg.to_dict()
    del d["model"]["frame_stack"], d["model"]["conv_channels"], d["model"]["mfcc_tower"]
    old = RunConfig.from_dict(d).model
    assert old.frame_stack == 1 and old.conv_channels == 0 and old.mfcc_tower == 0   # what those models are
    assert RunConfig.from_dict(RunConfig(labels=("a", "b"), model=ModelConfig(n_classes=2)).to_dict()).model.frame_stack == 2


def test_two_towers_average_their_probabilities_and_both_learn():
    """With mfcc_tower the output is the log of the towers' mean probabilities, and a training
    step gives both towers gradients (each its own loss)."""
    torch.manual_seed(0)
    m = BiLSTMClassifier(ModelConfig(hidden=8, conv_channels=2, mfcc_tower=6, n_classes=5)).eval()
    assert m.lstm2.input_size == 2 * 40 and m.lstm2.hidden_size == 6
    feats = torch.randn(3, 101, 40)
    with torch.no_grad():
        t = m(feats, towers=True)
        assert t.shape == (2, 3, 5)
        expect = (torch.softmax(t[0], -1) + torch.softmax(t[1], -1)) / 2
        assert torch.allclose(torch.softmax(m(feats), -1), expect, atol=1e-6)
    m.train()
    loss = sum(torch.nn.functional.cross_entropy(x, torch.tensor([0, 1, 2])) for x in m(feats, towers=True))
    loss.backward()
    assert m.lstm.weight_hh_l0.grad.abs().sum() > 0 and m.lstm2.weight_hh_l0.grad.abs().sum() > 0
    assert m.head2.weight.grad.abs().sum() > 0


def test_layer_by_layer_training_lstm_equals_nn_lstm(monkeypatch):
    """CPU training runs the stacked LSTM one layer at a time (run_lstm) so that the dropout
    between layers can be the cheap word_dropout: with that dropout taken out, outputs and weight
    gradients equal nn.LSTM's own (dropout 0) within 1e-5, for 2 and 3 layers."""
    import copy

    import pipeline.model as pm
    monkeypatch.setattr(pm, "word_dropout", lambda x, p: x)
    torch.manual_seed(0)
    for layers in (2, 3):
        lstm = torch.nn.LSTM(12, 7, num_layers=layers, batch_first=True, bidirectional=True, dropout=0.3).train()
        ref = copy.deepcopy(lstm)
        ref.dropout = 0.0
        x = torch.randn(4, 9, 12)
        out, want = pm.run_lstm(lstm, x), ref(x)[0]
        assert out.shape == want.shape == (4, 9, 14)
        assert torch.allclose(out, want, atol=1e-5)
        (out * torch.arange(14.0)).sum().backward()
        (want * torch.arange(14.0)).sum().backward()
        for (name, p), q in zip(lstm.named_parameters(), ref.parameters()):
            assert torch.allclose(p.grad, q.grad, atol=1e-5), name
    lstm.eval()                                     # evaluation: nn.LSTM itself, no dropout
    with torch.no_grad():
        assert torch.equal(pm.run_lstm(lstm, x), lstm(x)[0])


def test_word_dropout_keeps_1_minus_p_of_the_values_scaled():
    from pipeline.model import word_dropout
    x = torch.rand(1000, 999) + 0.5                 # odd size: the last 64-bit word is cut
    torch.manual_seed(0)
    y = word_dropout(x, 0.15)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.85) < 0.002
    for lane in range(4):                            # each 15-bit slice of the random words is uniform
        assert abs(kept.flatten()[: 999996].view(-1, 4)[:, lane].float().mean().item() - 0.85) < 0.003
    assert torch.allclose(y[kept], x[kept] / 0.85)
    torch.manual_seed(0)
    assert torch.equal(word_dropout(x, 0.15), y)     # seeded: the same mask
    assert not torch.equal(word_dropout(x, 0.15), y)
    from pipeline.model import WordDropout          # the module form (the embedding head's MLP)
    d = WordDropout(0.15)
    torch.manual_seed(0)
    assert torch.equal(d.train()(x), y)
    assert d.eval()(x) is x and d.state_dict() == {} and "p=0.15" in repr(d)
