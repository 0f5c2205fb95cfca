"""The numpy LSTM (gate equations, hand-written BPTT) against torch.nn.LSTM and autograd."""
import numpy as np
import pytest
import torch

from pipeline.lstm_reference import NumpyLSTM


@pytest.fixture(params=[(1, False), (1, True), (2, True), (3, True)], ids=lambda p: f"layers{p[0]}-bi{p[1]}")
def lstm(request):
    torch.manual_seed(0)
    layers, bi = request.param
    return torch.nn.LSTM(5, 7, num_layers=layers, bidirectional=bi, batch_first=True).double()


def test_forward_matches_torch(lstm):
    x = torch.randn(3, 11, 5, dtype=torch.float64)
    ref, _ = lstm(x)
    got, _ = NumpyLSTM.from_torch(lstm).forward(x.numpy())
    assert got.shape == ref.shape
    assert np.abs(got - ref.detach().numpy()).max() < 1e-5


def test_bptt_matches_autograd(lstm):
    x = torch.randn(2, 9, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 9, lstm.hidden_size * (2 if lstm.bidirectional else 1), dtype=torch.float64)
    out, _ = lstm(x)
    (out * w).sum().backward()                        # dL/dout = w
    ref = NumpyLSTM.from_torch(lstm)
    y, caches = ref.forward(x.detach().numpy())
    dx, grads = ref.backward(w.numpy(), caches)
    assert np.abs(dx - x.grad.numpy()).max() < 1e-5
    for name, p in lstm.named_parameters():
        assert np.abs(grads[name] - p.grad.numpy()).max() < 1e-5, name


def test_float32_forward_close_to_model_lstm():
    """The model's own LSTM (float32) agrees with the reference in float64 to float32 precision."""
    from pipeline.config import ModelConfig
    from pipeline.model import BiLSTMClassifier
    m = BiLSTMClassifier(ModelConfig(hidden=16, layers=2, n_classes=3, conv_channels=0, mfcc_tower=0)).eval()
    x = m.stack(torch.randn(2, 20, 40))             # (2, 10, 80): the LSTM's input after frame stacking
    ref, _ = m.lstm(x)
    got, _ = NumpyLSTM.from_torch(m.lstm).forward(x.double().numpy())
    assert np.abs(got - ref.detach().numpy()).max() < 1e-5
