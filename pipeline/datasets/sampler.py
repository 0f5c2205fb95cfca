"""Which training clips an epoch uses, and in which order.

    train split (clips,) labels -> per epoch: every word and _silence_ clip (x its --repeat count)
                                 + a fresh draw of n_unknown _unknown_ clips (x their counts)
                                 -> shuffled -> this rank's strided share (torchrun)

The ``_unknown_`` share of an epoch is capped (``train.unknown_fraction``), as Speech Commands
training does, so that the non-keyword class does not swamp the words. The cap is applied once,
when the data is loaded (``data.prepare``), so the clips left out are never seen: 414 of the
synthetic set's 1,130 training ``_unknown_`` clips, 10 of its 18 "start" clips. With
``train.unknown_per_epoch`` they are drawn afresh each epoch instead: every one of them is used
over a training while each epoch keeps the same share. Measured against the fixed draw (two
seeds each, README "Results"), it made more false accepts in the synthetic stream, so it is off.

Each epoch's draw and order come from a generator seeded by (seed, epoch), so a resumed run and
every rank of a distributed one see the same epochs as an uninterrupted single-process run. Without
the draw, the epochs are the permutations of one generator seeded by ``seed``, as training has
always made them, so such a run repeats the runs made before the draw existed.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def unknown_cap(n_words: int, fraction: float) -> int:
    """How many ``_unknown_`` clips make ``fraction`` of a split that has ``n_words`` word clips."""
    return math.ceil(fraction / max(1e-9, 1 - fraction) * n_words)


class EpochSampler:
    """Per-epoch clip indices for one rank.

    labels (clips,) int label indices of the training split; ``unknown``: the ``_unknown_`` label
    index (None: no such label); ``n_unknown``: how many ``_unknown_`` clips each epoch draws (None
    or at least their number: all, every epoch); ``repeats`` (clips,) uses per epoch (None: once).
    """

    def __init__(self, labels: np.ndarray, unknown: int | None, n_unknown: int | None,
                 repeats: np.ndarray | None, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        labels = np.asarray(labels)
        self.repeats = torch.ones(len(labels), dtype=torch.long) if repeats is None else \
            torch.as_tensor(np.asarray(repeats), dtype=torch.long)
        if len(self.repeats) != len(labels):
            raise ValueError(f"repeats: {len(self.repeats)} counts for {len(labels)} clips")
        is_unknown = labels == unknown if unknown is not None else np.zeros(len(labels), bool)
        self.fixed = torch.from_numpy(np.flatnonzero(~is_unknown))
        self.unknown = torch.from_numpy(np.flatnonzero(is_unknown))
        self.n_unknown = len(self.unknown) if n_unknown is None else min(n_unknown, len(self.unknown))
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        # The fewest uses an epoch can have: its steps are always full batches.
        least = int(self.repeats[self.fixed].sum())
        if self.n_unknown:
            least += int(torch.sort(self.repeats[self.unknown]).values[:self.n_unknown].sum())
        self.steps_per_epoch = max(1, least // (batch_size * world))
        self.uses_per_epoch = least

    @property
    def resampled(self) -> bool:
        """True when epochs differ in which ``_unknown_`` clips they use."""
        return self.n_unknown < len(self.unknown)

    def epoch(self, epoch: int) -> torch.Tensor:
        """(steps_per_epoch * batch_size,) clip indices of ``epoch`` for this rank, in training order."""
        if self.resampled:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            drawn = self.unknown[torch.randperm(len(self.unknown), generator=gen)[:self.n_unknown]]
            chosen = torch.sort(torch.cat([self.fixed, drawn])).values
        else:       # the same clips every epoch: one permutation stream, as before the draw existed
            gen = torch.Generator().manual_seed(self.seed)
            chosen = torch.arange(len(self.repeats))
            for _ in range(epoch):
                torch.randperm(int(self.repeats.sum()), generator=gen)
        pool = torch.repeat_interleave(chosen, self.repeats[chosen])
        order = pool[torch.randperm(len(pool), generator=gen)][self.rank::self.world]
        return order[:self.steps_per_epoch * self.batch_size]
