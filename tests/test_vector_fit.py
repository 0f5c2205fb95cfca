"""The loop both heads on frozen embeddings train with, and the batched embedding of a split
(pipeline/vector_fit.py)."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pipeline.vector_fit import embed_clips, embed_copies, fit_one_cycle


def _blobs(n=400, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = rng.standard_normal((3, dim)) * 3
    return torch.from_numpy((centres[y] + rng.standard_normal((n, dim))).astype(np.float32)), torch.from_numpy(y)


def _fit(seed, x, y, epochs=6):
    torch.manual_seed(100)                                   # the same initial weights for every seed
    lin = torch.nn.Linear(x.shape[1], 3)
    losses = fit_one_cycle(lin.parameters(), lambda b: F.cross_entropy(lin(F.dropout(x[b], 0.1)), y[b]),
                           len(x), 32, epochs, 3e-2, 1e-2, seed, "test")
    return lin, losses


def test_fit_one_cycle_learns_and_is_seeded():
    x, y = _blobs()
    lin, losses = _fit(0, x, y)
    assert len(losses) == 6 and losses[-1] < losses[0] / 3
    assert (lin(x).argmax(1) == y).float().mean() > 0.95
    again, losses_again = _fit(0, x, y)
    assert losses_again == losses and torch.equal(again.weight, lin.weight)
    other, _ = _fit(1, x, y)                                 # another order of batches, other dropout masks
    assert not torch.equal(other.weight, lin.weight)


def test_fit_one_cycle_refuses_nothing_to_fit():
    lin = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="n=0"):
        fit_one_cycle(lin.parameters(), lambda b: lin.weight.sum(), 0, 32, 3, 1e-2, 0.0, 0, "test")


def test_embed_clips_batches_order_and_augmentation():
    audio = (np.arange(10)[:, None] * np.ones((1, 16))).astype(np.int16) * 1000   # clip i: all 1000 * i
    embed = lambda wave: wave.mean(1, keepdim=True).numpy() * 32768.0 / 1000      # (batch, 1): i
    out = embed_clips(embed, audio, None, "test", batch=3, empty_shape=(1,))
    assert out.shape == (10, 1) and np.allclose(out[:, 0], np.arange(10))
    order = np.array([4, 4, 0, 9])
    assert np.allclose(embed_clips(embed, audio, None, "test", 3, (1,), order)[:, 0], order)
    doubled = embed_clips(embed, audio, lambda w: (w * 2, None), "test", 4, (1,))
    assert np.allclose(doubled[:, 0], 2 * np.arange(10))
    empty = embed_clips(embed, audio[:0], None, "test", 3, (5, 96))
    assert empty.shape == (0, 5, 96) and empty.dtype == np.float32


def test_embed_copies_clean_once_per_clip_augmented_per_use():
    audio = (np.arange(5)[:, None] * np.ones((1, 16))).astype(np.int16) * 1000     # clip i: all 1000 * i
    embedded = []                                                                  # how many clips each call embeds
    def embed_fn(embed, audio, augment, desc, order=None):
        out = embed_clips(embed, audio, augment, desc, 2, (1,), order)
        embedded.append(len(out))
        return out
    embed = lambda wave: wave.mean(1, keepdim=True).numpy() * 32768.0 / 1000
    order = np.array([0, 1, 1, 1, 2, 3, 4])                                        # clip 1 used three times
    x = embed_copies(embed_fn, embed, audio, lambda w: (w * 2, None), 3, order, "test")
    assert embedded == [5, 7, 7]                                                   # clean: each clip once
    assert np.allclose(x[:, 0], np.concatenate([order, 2 * order, 2 * order]))
    embedded.clear()
    x = embed_copies(embed_fn, embed, audio, lambda w: (w * 2, None), 2, None, "test")
    assert embedded == [5, 5] and np.allclose(x[:, 0], np.concatenate([np.arange(5), 2 * np.arange(5)]))
