"""The word head: a classifier on EfficientWord-Net's word embedding (pipeline/word_net.py), pooled
with the BiLSTM and the speech-embedding head (`kws train-head --word`).

    (batch, 98, 64) log filterbank frames of the 1-s window (the front-end's last 64 columns)
    -> quiet-floor frames before and after, to the network's 149 (1.5 s) -> WordNet -> (batch, 2048)
    -> standardised (training-set mean and deviation, fixed) -> MLP (256, LayerNorm, ReLU, dropout)
    -> (batch, classes) log-probabilities

The exported model's probabilities are the normalised geometric mean of the word head's and those
of the BiLSTM pooled with the embedding head (:func:`pool_word`). Trained on synthetic voices
only: the embedding of every training clip, clean and in one augmented copy (the training's own
augmentation), computed once on onnxruntime; then the MLP, in seconds.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .audio import noise_floor
from .errors import ConfigError
from .model import WordDropout
from .vector_fit import embed_clips, fit_one_cycle
from .word_net import FRAME, HOP, WORD_DIM, WORD_FRAMES, WordFbank, WordNet, fetch_word_model

WINDOW_FRAMES = 98                   # the model's 1-s window, in the MFCC's frames
PAD_BEFORE = (WORD_FRAMES - WINDOW_FRAMES) // 2
HIDDEN, DROPOUT, INPUT_DROPOUT = 256, 0.3, 0.2
EPOCHS, BATCH, LR = 40, 256, 2e-3


def check_window(n_frames: int) -> None:
    if n_frames != WINDOW_FRAMES:
        raise ConfigError(f"the word head needs the default 1-s window ({WINDOW_FRAMES} frames); this model has {n_frames}")


def floor_frames() -> torch.Tensor:
    """(149 - 98, 64): the log filterbank of the quiet floor (audio.noise_floor), the frames put around a window."""
    n = WORD_FRAMES - WINDOW_FRAMES
    with torch.no_grad():
        return WordFbank()(torch.from_numpy(noise_floor((n - 1) * HOP + FRAME))[None])[0]


class WordMLP(nn.Module):
    """(batch, 2048) word vectors -> (batch, classes) log-probabilities."""

    def __init__(self, n_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(WORD_DIM))
        self.register_buffer("std", torch.ones(WORD_DIM))
        self.net = nn.Sequential(nn.Linear(WORD_DIM, HIDDEN), nn.LayerNorm(HIDDEN), nn.ReLU(), WordDropout(DROPOUT),
                                 nn.Linear(HIDDEN, n_classes))

    def forward(self, vec: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.net((vec - self.mean) / self.std), dim=-1)


class WordHead(nn.Module):
    """(batch, 98, 64) log filterbank frames -> (batch, classes) log-probabilities; :meth:`gated` pools them."""

    def __init__(self, labels: tuple[str, ...], net: WordNet, gate: float):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.mlp = WordMLP(len(labels))
        self.gate = gate
        self.register_buffer("keywords", torch.tensor(keyword_mask(labels)), persistent=False)
        pad = floor_frames()
        self.register_buffer("before", pad[:PAD_BEFORE].clone(), persistent=False)
        self.register_buffer("after", pad[PAD_BEFORE:].clone(), persistent=False)

    def padded(self, frames: torch.Tensor) -> torch.Tensor:
        """(batch, 98, 64) -> (batch, 149, 64): the window between quiet-floor frames."""
        b = frames.shape[0]
        return torch.cat([self.before.expand(b, -1, -1), frames, self.after.expand(b, -1, -1)], dim=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.net(self.padded(frames)))

    def gated(self, pooled: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """(batch, classes) log-probabilities of the BiLSTM with the embedding head, (batch, 98, 64) ->
        (batch, classes): :func:`pool_word` with this head's where some keyword's pooled probability
        reaches ``gate``, the pooled ones as they are elsewhere (:func:`gate_open`)."""
        return torch.where(gate_open(pooled.exp(), self.keywords, self.gate)[:, None],
                           pool_word(pooled, self(frames)), pooled.float())


def keyword_mask(labels: tuple[str, ...]) -> list[bool]:
    """(classes,): True for the words a stream can fire on (not ``_unknown_``, ``_silence_``)."""
    return [not label.startswith("_") for label in labels]


def gate_open(probs, keywords, gate: float):
    """(batch, classes) probabilities -> (batch,) bool: does any keyword reach ``gate``? Where none
    does, the word network is not run (a stream saves its cost: it is most of a hop's work), and the
    window keeps the two cheaper models' scores. Torch tensors or numpy arrays."""
    if isinstance(probs, torch.Tensor):
        return (probs * keywords.to(probs.dtype)).amax(dim=-1) >= gate
    return (np.asarray(probs) * np.asarray(keywords, np.float32)).max(axis=-1) >= gate


def pool_word(pooled: torch.Tensor, word: torch.Tensor) -> torch.Tensor:
    """(batch, classes) log-probabilities of the BiLSTM with the embedding head, and of the word head
    -> (batch, classes) log-probabilities: their normalised geometric mean."""
    return torch.log_softmax((pooled.float() + word) / 2, dim=-1)


def new_word_head(labels: tuple[str, ...], gate: float) -> WordHead:
    """A word head with the pretrained network (fetched once) and an untrained MLP."""
    return WordHead(labels, WordNet(fetch_word_model()), gate)


class WordEmbedder:
    """(batch, 1-s samples) float32 -> (batch, 2048): the torch front-end and padding, then the
    upstream graph on onnxruntime (per clip: its batch is fixed at 1; equal to WordNet within 1e-6)."""

    def __init__(self, head: WordHead, threads: int = 0):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(fetch_word_model()), opts, providers=["CPUExecutionProvider"])
        self.fbank, self.head = WordFbank(), head

    @torch.no_grad()
    def __call__(self, wave: torch.Tensor) -> np.ndarray:
        frames = self.head.padded(self.fbank(wave.float().cpu())).numpy()
        return np.concatenate([self.session.run(None, {"input": f[None, None]})[0] for f in frames])


def embed_words(embed: WordEmbedder, audio: np.ndarray, augment, desc: str, batch: int = 64,
                order: np.ndarray | None = None) -> np.ndarray:
    """(clips, samples) int16 -> (clips, 2048) float32; augmented when ``augment`` is given.
    ``order`` (n,): the clips to embed, in this order (default all, once)."""
    return embed_clips(embed, audio, augment, desc, batch, (WORD_DIM,), order)


def fit_word_mlp(mlp: WordMLP, x: np.ndarray, y: np.ndarray, seed: int, label_smoothing: float = 0.05) -> list[float]:
    """Train ``mlp`` on vectors (n, 2048) and labels (n,): its standardisation from ``x``, then
    AdamW with a one-cycle schedule -> mean loss per epoch."""
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y.astype(np.int64))
    mlp.mean.copy_(xt.mean(0))
    mlp.std.copy_(xt.std(0) + 1e-6)
    mlp.train()

    def batch_loss(b: torch.Tensor) -> torch.Tensor:
        z = F.dropout((xt[b] - mlp.mean) / mlp.std, INPUT_DROPOUT)
        return F.cross_entropy(mlp.net(z), yt[b], label_smoothing=label_smoothing)

    losses = fit_one_cycle(mlp.net.parameters(), batch_loss, len(xt), BATCH, EPOCHS, LR, 1e-2, seed, "word head")
    mlp.eval()
    return losses


@torch.no_grad()
def word_probs(mlp: WordMLP, vec: np.ndarray) -> np.ndarray:
    return torch.cat([mlp(torch.from_numpy(vec[i:i + 1024]).float()).exp() for i in range(0, len(vec), 1024)]).numpy()
