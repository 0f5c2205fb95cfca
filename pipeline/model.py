"""The classifier: stacked bidirectional LSTM over normalised MFCC frames.

``BiLSTMClassifier``: (batch, frames, n_mfcc) raw MFCC -> (batch, classes) logits.
``WaveformClassifier``: (batch, samples) waveform -> (batch, classes) probabilities, front-end
inside: the graph that is exported to ONNX. ``WeightEMA``: a moving average of the weights
(``kws train --ema-decay``).

The normalisation statistics (per-coefficient mean and std over the training set) are buffers of
the classifier, fixed at training time, so they travel with the weights and into the ONNX graph.
"""
from __future__ import annotations

import copy

import torch
import torchaudio.functional as AF
from torch import _VF, nn

from .config import FeatureConfig, ModelConfig
from .features import MFCC


def log_mean_probs(logits: torch.Tensor) -> torch.Tensor:
    """(members, batch, n_classes) logits -> (batch, n_classes): the log of the members' mean
    probabilities. Its softmax is that mean (the mean sums to 1), so wrappers that apply softmax
    to a classifier's output give the averaged probabilities. One member: its logits as they are."""
    if len(logits) == 1:
        return logits[0]
    return torch.log(torch.softmax(logits.float(), dim=-1).mean(dim=0).clamp_min(1e-30))


def word_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout (training) whose mask comes from 64-bit random words cut into four 15-bit draws:
    a quarter of the generator calls of ``F.dropout``'s per-element ``bernoulli_``, which on a
    2-core CPU took 37 ms a step for the (128, 49, 256) activations between the default model's
    LSTM layers (this: 11 ms). Keep probability 1 - p to 1/32768; kept values are
    scaled by 1 / (1 - p), as F.dropout does."""
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()
    draws = words.view(torch.int16)[:n].view(x.shape) & 0x7FFF           # uniform in [0, 32768)
    return x * (draws >= round(p * 32768)) * (1.0 / (1.0 - p))


class WordDropout(nn.Module):
    """nn.Dropout with :func:`word_dropout`'s mask in training; the identity in evaluation (and so
    in the exported graphs). No state: a model saved with nn.Dropout in its place loads as it was."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return word_dropout(x, self.p) if self.training and self.p > 0 else x

    def extra_repr(self) -> str:
        return f"p={self.p}"


def run_lstm(lstm: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """(batch, steps, width) -> (batch, steps, 2 * hidden): ``lstm(x)[0]`` for a batch-first
    bidirectional LSTM. Training on a CPU with dropout between layers, it runs one layer at a time
    (as oneDNN's kernel does anyway) with :func:`word_dropout` between them; the same weights,
    state dict and ONNX export. On CUDA cuDNN drops inside its own kernel, so nn.LSTM runs as is."""
    if not (lstm.training and lstm.dropout > 0 and lstm.num_layers > 1 and x.device.type == "cpu"):
        return lstm(x)[0]
    per_layer = len(lstm._flat_weights) // lstm.num_layers               # 8: (w_ih, w_hh, b_ih, b_hh) x 2
    h0 = x.new_zeros(2, x.shape[0], lstm.hidden_size)
    for layer in range(lstm.num_layers):
        if layer:
            x = word_dropout(x, lstm.dropout)
        weights = lstm._flat_weights[layer * per_layer:(layer + 1) * per_layer]
        x = _VF.lstm(x, (h0, h0), weights, lstm.bias, 1, 0.0, True, True, True)[0]
    return x


class BiLSTMClassifier(nn.Module):
    """(batch, frames, n_mfcc) -> (batch, n_classes) logits.

    frames -> (x - mean) / std -> stack ``frame_stack`` neighbouring frames (batch, frames // k,
    k * n_mfcc) -> LSTM (layers, bidirectional) -> [mean over time ; max over time] -> dropout -> linear.
    With ``conv_channels`` C > 0 the normalised frames first become (batch, frames, C * n_mfcc // 2)
    through ``spectral_conv``. With ``mfcc_tower`` H > 0 a second stack (hidden H, own head) reads
    the normalised MFCC frames, and the output averages the two towers' probabilities.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("feat_mean", torch.zeros(cfg.n_mfcc))
        self.register_buffer("feat_std", torch.ones(cfg.n_mfcc))
        width = cfg.n_mfcc
        if cfg.conv_channels:
            # inverse of the front-end's orthonormal DCT-II (square: n_mfcc == n_mels): MFCC -> log-mel
            self.register_buffer("idct", AF.create_dct(cfg.n_mfcc, cfg.n_mfcc, norm="ortho").T.contiguous(),
                                 persistent=False)
            self.conv = nn.Conv2d(1, cfg.conv_channels, kernel_size=(3, 5), padding=(1, 2))
            width = cfg.conv_channels * (cfg.n_mfcc // 2) + (cfg.n_mfcc if cfg.conv_skip else 0)
        self.lstm = self._bilstm(width, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(4 * cfg.hidden, cfg.n_classes)
        if cfg.mfcc_tower:                      # a second BiLSTM stack and head on the MFCC frames themselves
            self.lstm2 = self._bilstm(cfg.n_mfcc, cfg.mfcc_tower)
            self.head2 = nn.Linear(4 * cfg.mfcc_tower, cfg.n_classes)

    def _bilstm(self, width: int, hidden: int) -> nn.LSTM:
        cfg = self.cfg
        return nn.LSTM(width * cfg.frame_stack, hidden, num_layers=cfg.layers, batch_first=True,
                       bidirectional=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0)

    def set_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Fix the per-coefficient statistics: (n_mfcc,) each."""
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std.clamp(min=1e-3))

    def normalise(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.feat_mean) / self.feat_std

    def spectral_conv(self, z: torch.Tensor) -> torch.Tensor:
        """(batch, frames, n_mfcc) normalised MFCC -> (batch, frames, C * (n_mfcc // 2)).

        The mean-removed log-mel spectrum ((x - mean) @ idct = (z * std) @ idct, scaled by one
        number: the RMS of the per-coefficient stds) -> Conv2d 3x5 over (time, mel), ReLU -> max
        over mel-bin pairs."""
        spec = (z * self.feat_std) @ self.idct / self.feat_std.pow(2).mean().sqrt()
        y = torch.relu(self.conv(spec.unsqueeze(1)))                       # (batch, C, frames, n_mels)
        y = torch.nn.functional.max_pool2d(y, kernel_size=(1, 2))          # (batch, C, frames, n_mels // 2)
        return y.permute(0, 2, 1, 3).flatten(2)

    def stack(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, frames, n) -> (batch, frames // k, k * n): step t holds frames k*t .. k*t + k-1 (after
        dropping the first frames % k)."""
        k = self.cfg.frame_stack
        if k == 1:
            return x
        x = x[:, x.shape[1] % k:]          # drop the oldest frames, not the newest (a stream's latest audio)
        return x.reshape(x.shape[0], x.shape[1] // k, k * x.shape[2])

    def _tower(self, lstm: nn.LSTM, head: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """(batch, frames, width) -> (batch, n_classes) logits."""
        out = run_lstm(lstm, self.stack(x))                     # (batch, frames // k, 2*hidden)
        pooled = torch.cat([out.mean(dim=1), out.amax(dim=1)], dim=-1)   # (batch, 4*hidden)
        return head(self.drop(pooled))

    def tower_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """(batch, frames, n_mfcc) -> (towers, batch, n_classes): each tower's own logits."""
        z = self.normalise(feats)
        x = z
        if self.cfg.conv_channels:
            c = self.spectral_conv(z)
            x = torch.cat([z, c], dim=-1) if self.cfg.conv_skip else c
        logits = [self._tower(self.lstm, self.head, x)]
        if self.cfg.mfcc_tower:
            logits.append(self._tower(self.lstm2, self.head2, z))
        return torch.stack(logits)

    def forward(self, feats: torch.Tensor, towers: bool = False) -> torch.Tensor:
        """(batch, frames, n_mfcc) -> (batch, n_classes) logits; with two towers, the log of their
        mean probabilities (its softmax is that mean, as for an ensemble). ``towers=True`` gives
        :meth:`tower_logits` instead (training: each tower learns from its own loss)."""
        t = self.tower_logits(feats)
        return t if towers else log_mean_probs(t)


class WaveformClassifier(nn.Module):
    """(batch, samples) -> (batch, n_classes) probabilities; MFCC via the in-graph DFT, or the given
    ``frontend`` (the embedding head's MFCC + log-mel, pipeline/embedding_head.py)."""

    def __init__(self, features: FeatureConfig, classifier: nn.Module, use_dft: bool = True,
                 frontend: nn.Module | None = None):
        super().__init__()
        self.frontend = frontend if frontend is not None else MFCC(features, use_dft=use_dft)
        self.classifier = classifier

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(self.frontend(wave)), dim=-1)


class FramesClassifier(nn.Module):
    """(batch, frames, n_mfcc) -> (batch, n_classes) probabilities: the streaming graph."""

    def __init__(self, classifier: BiLSTMClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(feats), dim=-1)


class WeightEMA:
    """Exponential moving average of a model's weights: the copy that is validated, saved as
    ``model`` in the checkpoints and exported. The decay ramps up as min(decay, (1+k)/(10+k))
    over the first k steps, so the random initial weights do not linger."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1.0 - d)
        for b, src in zip(self.model.buffers(), model.buffers()):
            b.copy_(src)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
