"""What the two heads on frozen pretrained embeddings share (pipeline/head_train.py's speech-embedding
head, pipeline/word_head.py's word head): embedding a split once, in batches, and training a small
classifier on the vectors.

    (clips, samples) int16 -> batches of float waveform (batch, samples), augmented or clean
    -> the embedder -> (clips, *vector_shape) float32
    vectors, labels -> ``epochs`` of AdamW with a one-cycle schedule -> mean loss per epoch

The embedding networks are frozen and the slow part (onnxruntime, about 1 ms per window on a 2-core
CPU), so each copy of a split is embedded once; the classifier then trains in seconds per epoch.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm


def embed_clips(embed: Callable[[torch.Tensor], np.ndarray], audio: np.ndarray, augment, desc: str,
                batch: int, empty_shape: tuple[int, ...], order: np.ndarray | None = None) -> np.ndarray:
    """(clips, samples) int16 -> the embeddings stacked, (n, *empty_shape) float32.

    ``augment``: an Augmenter ((batch, samples) -> (waveform, _)) or None for the clean clips.
    ``order`` (n,): the clips to embed, in this order, a clip as often as it is there (default all,
    once). ``empty_shape``: the shape of one vector, for a split with no clips."""
    out = []
    n = len(audio) if order is None else len(order)
    for i in tqdm(range(0, n, batch), desc=desc, unit="batch", leave=False):
        part = audio[i:i + batch] if order is None else audio[order[i:i + batch]]
        x = torch.from_numpy(part.astype(np.float32) / 32768.0)
        if augment is not None:
            x, _ = augment(x)
        out.append(embed(x))
    return np.concatenate(out) if out else np.zeros((0, *empty_shape), np.float32)


def embed_copies(embed_fn, embed, audio: np.ndarray, augment, copies: int, order: np.ndarray | None,
                 desc: str) -> np.ndarray:
    """The training vectors of a split, ``copies`` times: (copies * uses, *vector) float32, the clean
    copy first. ``embed_fn(embed, audio, augment, desc, order=...)`` embeds clips (``embed_split``,
    ``embed_words``); ``order`` (uses,) as in :func:`embed_clips` (None: each clip once). The clean
    copy embeds each clip once and repeats its vector as often as the clip is used; every use of a
    clip in an augmented copy is augmented, and embedded, on its own."""
    xs = []
    for c in range(copies):
        name = f"{desc} {'clean' if c == 0 else f'copy {c}'} ({c + 1}/{copies})"
        x = embed_fn(embed, audio, augment if c else None, name, order=order if c else None)
        xs.append(x[order] if c == 0 and order is not None else x)
    return np.concatenate(xs)


def fit_one_cycle(params: Iterable[torch.nn.Parameter], batch_loss: Callable[[torch.Tensor], torch.Tensor],
                  n: int, batch: int, epochs: int, lr: float, weight_decay: float, seed: int,
                  desc: str) -> list[float]:
    """Train on ``n`` examples: each epoch a fresh permutation in batches of ``batch`` indices,
    ``batch_loss(indices)`` -> scalar loss, AdamW from ``lr / 2`` with a one-cycle schedule peaking
    at ``lr`` -> the mean loss per epoch. Seeded: the same ``seed`` gives the same weights.
    The caller puts its module in train mode before and eval mode after."""
    if n <= 0 or batch <= 0 or epochs <= 0:
        raise ValueError(f"fit_one_cycle needs examples, a batch and epochs (n={n}, batch={batch}, epochs={epochs})")
    torch.manual_seed(seed)
    params = list(params)
    steps = (n + batch - 1) // batch
    opt = torch.optim.AdamW(params, lr / 2, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps)
    losses = []
    bar = tqdm(range(epochs), desc=desc, unit="epoch", leave=False)
    for _ in bar:
        perm, total = torch.randperm(n), 0.0
        for i in range(0, n, batch):
            b = perm[i:i + batch]
            loss = batch_loss(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
        losses.append(total / n)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses
