"""A classifier on Google's pretrained speech embedding, and the model that averages it with the BiLSTM.

Trained on synthetic voices only, such a head carries over to real speakers far better than the
MFCC BiLSTM (README, Results: FSDD ~89% against ~71%), because the embedding was trained by Google
on a large body of real speech. Pooled with the BiLSTM it does better than either.

``EmbeddingHead``: (batch, frames, 32) embedding log-mel -> (batch, classes) log-probabilities:
    ``windows`` windows of 76 frames, ``stride`` apart, the last ending at the last frame (1 s, 5
    windows, stride 5: starts 2, 7, 12, 17, 22) -> frozen
    ``EmbeddingNet`` -> (batch, windows, 96) -> each run of ``context`` vectors joined -> MLP ->
    log-softmax -> mean probability over the runs.
``HeadFrontend``: (batch, samples) -> (batch, frames, n_mfcc + 32): MFCC and embedding log-mel of
    the same frames side by side, so the stream's frame cache and frames graph work as for the
    BiLSTM alone.
``WithHead``: (batch, frames, n_mfcc + 32) -> (batch, classes): the BiLSTM's (or ensemble's) and the
    head's probabilities pooled (:func:`pool`), as log-probabilities, in place of the classifier in
    the exported graphs.
``CachedHead``: (batch, frames, n_mfcc) and (batch, windows, 96) -> (batch, classes) probabilities:
    the same with the embedding vectors computed outside, by the stream's vector cache.

With ``HeadConfig.word`` the head also carries a word head (pipeline/word_head.py, ``EmbeddingHead.word``):
the front-end then adds 64 log-filterbank columns after the 32 log-mel ones, and the pooled
probabilities are pooled once more with the word head's where its gate opens (``WordHead.gated``).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from .config import FeatureConfig, HeadConfig
from .embedding_net import N_FFT, HOP, EmbeddingLogMel, EmbeddingNet
from .errors import CheckpointError, ConfigError
from .features import MFCC
from .model import WordDropout, log_mean_probs
from .speech_embedding import DIM, N_MELS, WINDOW_FRAMES, window_starts
from .word_head import check_window
from .word_net import WordFbank


def check_features(f: FeatureConfig, cfg: HeadConfig) -> None:
    """The head's frames must be the MFCC's frames (16 kHz, 400-sample window, 160 hop), and its
    windows must fit in the model's window. ConfigError otherwise."""
    if (f.sample_rate, f.n_fft, f.hop_length) != (16000, N_FFT, HOP):
        raise ConfigError(f"the embedding head needs the default framing (16 kHz, n_fft {N_FFT}, hop {HOP}); "
                          f"this model has {f.sample_rate} Hz, n_fft {f.n_fft}, hop {f.hop_length}")
    try:
        window_starts(f.n_frames, cfg.windows, cfg.stride)
    except ValueError as e:
        raise ConfigError(f"the embedding head: {e}") from None


class MLPHead(nn.Module):
    """(batch, windows, 96) embedding vectors -> (batch, classes) log-probabilities (mean over runs)."""

    def __init__(self, cfg: HeadConfig, n_classes: int):
        super().__init__()
        self.context = cfg.context
        h = cfg.hidden
        # WordDropout: nn.Dropout's per-value bernoulli_ was half of a training step on a CPU
        self.net = nn.Sequential(nn.Linear(cfg.context * DIM, h), nn.LayerNorm(h), nn.ReLU(), WordDropout(cfg.dropout),
                                 nn.Linear(h, h), nn.LayerNorm(h), nn.ReLU(), WordDropout(cfg.dropout),
                                 nn.Linear(h, n_classes))

    def forward(self, vec: torch.Tensor) -> torch.Tensor:
        runs = vec.shape[1] - self.context + 1
        ctx = torch.cat([vec[:, k:k + runs] for k in range(self.context)], dim=-1)   # (batch, runs, context*96)
        lp = torch.log_softmax(self.net(ctx), dim=-1)
        if runs == 1:
            return lp[:, 0]
        return torch.logsumexp(lp, dim=1) - math.log(runs)                          # log of the mean probability


class EmbeddingHead(nn.Module):
    """(batch, frames, 32) embedding log-mel -> (batch, classes) log-probabilities."""

    def __init__(self, cfg: HeadConfig, n_classes: int, n_frames: int, net: EmbeddingNet):
        super().__init__()
        self.cfg = cfg
        self.starts = window_starts(n_frames, cfg.windows, cfg.stride)
        self.embedding = net.eval().requires_grad_(False)
        self.mlp = MLPHead(cfg, n_classes)
        self.thresholds: dict[str, float] = {}     # streaming thresholds set with the BiLSTM (head.pt)
        self.word: nn.Module | None = None          # the word head (pipeline/word_head.py), with cfg.word

    def vectors(self, logmel: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 32) -> (batch, windows, 96); frames must be the model's window."""
        b = logmel.shape[0]
        win = torch.stack([logmel[:, s:s + WINDOW_FRAMES] for s in self.starts], dim=1)    # (b, w, 76, 32)
        return self.embedding(win.reshape(b * len(self.starts), WINDOW_FRAMES, N_MELS)).reshape(b, -1, DIM)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.vectors(logmel))


def pool(lstm: torch.Tensor, head: torch.Tensor, pooling: str) -> torch.Tensor:
    """(batch, classes) BiLSTM logits (or log-probabilities) and head log-probabilities -> (batch, classes)
    log-probabilities of the two pooled (``HeadConfig.pooling``):

    * ``geometric``: log_softmax of the mean of the two log-probabilities, the normalised geometric
      mean p ~ sqrt(p_lstm * p_head). Where both favour a word, it keeps their confidence; where
      one is sure and the other spread thin (the BiLSTM on many real voices), the sure one decides.
    * ``mean``: the log of the arithmetic mean of the probabilities (log_mean_probs)."""
    lstm = lstm.float()
    if pooling == "geometric":
        return torch.log_softmax((torch.log_softmax(lstm, dim=-1) + head) / 2, dim=-1)
    return log_mean_probs(torch.stack([lstm, head]))


class HeadFrontend(nn.Module):
    """(batch, samples) -> (batch, frames, n_mfcc + 32 [+ 64]): the MFCC front-end, the embedding's
    log-mel and, with the word head, its log filterbank (word_net.WordFbank)."""

    def __init__(self, mfcc: MFCC, logmel: EmbeddingLogMel, word: bool = False):
        super().__init__()
        self.mfcc, self.logmel = mfcc, logmel
        self.fbank = WordFbank() if word else None

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        parts = [self.mfcc(wave), self.logmel(wave)] + ([self.fbank(wave)] if self.fbank is not None else [])
        return torch.cat(parts, dim=-1)


class WithHead(nn.Module):
    """(batch, frames, n_mfcc + 32 [+ 64]) -> (batch, classes): both models' probabilities pooled (log),
    then with the word head's (word_head.pool_word) where there is one."""

    def __init__(self, classifier: nn.Module, head: EmbeddingHead, n_mfcc: int):
        super().__init__()
        self.classifier, self.head, self.n_mfcc = classifier, head, n_mfcc

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        n = self.n_mfcc
        lp = pool(self.classifier(feats[..., :n]), self.head(feats[..., n:n + N_MELS]), self.head.cfg.pooling)
        return lp if self.head.word is None else self.head.word.gated(lp, feats[..., n + N_MELS:])


class CachedHead(nn.Module):
    """(batch, frames, n_mfcc) MFCC frames, (batch, windows, 96) embedding vectors -> (batch, classes)
    probabilities: ``WithHead`` with the embedding (``EmbeddingHead.vectors``) run outside, so that a
    stream embeds each window once and keeps the vectors for the next hops (model.cached.onnx). A
    word head is not in it: the stream runs it apart (model.word.onnx) where its gate opens."""

    def __init__(self, with_head: WithHead):
        super().__init__()
        self.classifier, self.mlp = with_head.classifier, with_head.head.mlp
        self.pooling = with_head.head.cfg.pooling

    def forward(self, frames: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        return torch.softmax(pool(self.classifier(frames), self.mlp(vectors), self.pooling), dim=-1)


def head_path(run: Path) -> Path:
    run = Path(run)
    return (run if run.is_dir() else run.parent) / "head.pt"


def load_head(path: Path, labels: tuple[str, ...], features: FeatureConfig) -> tuple[HeadConfig, EmbeddingHead, EmbeddingLogMel]:
    """``head.pt`` -> (config, head with its ``thresholds``, its log-mel front-end), in eval mode on the CPU. CheckpointError
    when the file is not a head, or was trained for other words or another front-end."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        # a head saved before pooling was a choice was averaged arithmetically, its thresholds set so
        cfg = HeadConfig.from_dict({"pooling": "mean", **ck["head_config"]})
        saved_labels, saved_feats = tuple(ck["labels"]), FeatureConfig(**ck["features"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except Exception as e:
        raise CheckpointError(f"{path}: not an embedding head (`kws train-head` writes one): {type(e).__name__}") from None
    if saved_labels != tuple(labels):
        raise CheckpointError(f"{path}: trained for other words ({', '.join(saved_labels)}) than the model's")
    if saved_feats.differing(features):
        raise CheckpointError(f"{path}: trained with another front-end ({', '.join(saved_feats.differing(features))})")
    logmel = EmbeddingLogMel()
    net = EmbeddingNet(ck["embedding_layers"])
    head = EmbeddingHead(cfg, len(labels), features.n_frames, net)
    try:
        logmel.load_state_dict(ck["logmel"])
        head.load_state_dict(ck["head"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit its config ({str(e).splitlines()[0][:120]})") from None
    head.thresholds = dict(ck.get("thresholds", {}))
    if cfg.word:
        from .word_head import new_word_head
        check_window(features.n_frames)
        head.word = new_word_head(tuple(labels), cfg.word_gate)
        try:
            head.word.mlp.load_state_dict(ck["word_mlp"])
        except (KeyError, RuntimeError) as e:
            raise CheckpointError(f"{path}: its word head does not fit ({str(e).splitlines()[0][:120]})") from None
        head.word.eval()
    return cfg, head.eval(), logmel.eval()
