"""Several trained runs as one model: their class probabilities averaged (`kws export RUN RUN ...`).

Trainings that differ only in their seed disagree most on what none of them has seen: real voices
and the words between keywords. Averaging their probabilities evens that out (README, Results:
two or three members gain 2-3 points on FSDD and 3-5 on the Speech Commands subset, and more hits
at 1-2 false accepts per hour). The cost is one classifier per member at inference; the front-end
is shared, because every member must have the same words and front-end settings.

``EnsembleClassifier`` takes the place of one ``BiLSTMClassifier`` inside ``WaveformClassifier``
and ``FramesClassifier``, so the exported graphs, their inputs and outputs, the stream and the
device path are the same as for one model.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from .checkpoint import load_model
from .config import RunConfig
from .errors import CheckpointError
from .model import BiLSTMClassifier, log_mean_probs


class EnsembleClassifier(nn.Module):
    """(batch, frames, n_mfcc) raw MFCC -> (batch, n_classes): log of the members' mean probabilities.

    Its softmax is exactly that mean (the mean sums to 1), so the wrappers that apply softmax to a
    classifier's logits give the averaged probabilities."""

    def __init__(self, members: list[BiLSTMClassifier]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return log_mean_probs(torch.stack([m(feats) for m in self.members]))     # (batch, n_classes)


def mean_thresholds(per_member: list[dict[str, float]]) -> dict[str, float]:
    """Per-word streaming thresholds of the ensemble: the mean of the members' (each set at or
    above the same floor from its own validation clips), over the members that have one."""
    words = sorted({w for t in per_member for w in t})
    return {w: round(sum(t[w] for t in per_member if w in t) / sum(w in t for t in per_member), 3) for w in words}


def load_ensemble(runs: list[Path]) -> tuple[RunConfig, nn.Module, list[dict]]:
    """Run folders or .pt files -> (config of the first, classifier, one description per member).

    One run gives its own ``BiLSTMClassifier``; several give an ``EnsembleClassifier``. Every run
    must have the first one's labels and front-end settings (CheckpointError naming the run if not)."""
    first_cfg, first = load_model(runs[0])
    members, described = [first], [_describe(runs[0], first_cfg)]
    for run in runs[1:]:
        cfg, clf = load_model(run)
        if cfg.labels != first_cfg.labels:
            raise CheckpointError(f"{run}: its words ({', '.join(cfg.labels)}) differ from {runs[0]}'s "
                                  f"({', '.join(first_cfg.labels)}); an ensemble needs the same words")
        if cfg.features != first_cfg.features:
            raise CheckpointError(f"{run}: its front-end differs from {runs[0]}'s "
                                  f"({', '.join(cfg.features.differing(first_cfg.features))}); "
                                  f"an ensemble needs the same features")
        members.append(clf)
        described.append(_describe(run, cfg))
    model = first if len(members) == 1 else EnsembleClassifier(members).eval()
    return first_cfg, model, described


def _describe(run: Path, cfg: RunConfig) -> dict:
    return {"run": str(run), "model": dataclasses.asdict(cfg.model)}
