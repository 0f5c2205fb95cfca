"""Knowledge distillation: one model trained to match several (`kws train --teacher RUN [RUN ...]`).

Averaging trainings (pipeline/ensemble.py) is more accurate on real voices than any one of them,
but costs one classifier per member on the device. A student trained on the teachers' averaged,
tempered probabilities as well as on the labels keeps the cost of one model:

    loss = (1 - w) * CE(student logits, labels) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))

with w = ``TrainConfig.distill_weight`` and T = ``distill_temperature``. The teachers see the same
augmented features as the student (before SpecAugment) and run without gradients; they must have
the student's words and front-end settings. Their paths are saved in the config (``train.teachers``).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .config import RunConfig
from .ensemble import load_ensemble
from .errors import CheckpointError


def check_teachers(cfg: RunConfig, labels: bool = True):
    """Load ``cfg.train.teachers`` and check they fit ``cfg`` (front-end; words too with ``labels``)
    -> (teacher config, classifier). CheckpointError naming --teacher if not; `kws train` calls it
    before decoding any data."""
    runs = [Path(r) for r in cfg.train.teachers]
    tcfg, model, _ = load_ensemble(runs)
    if labels and tcfg.labels != cfg.labels:
        raise CheckpointError(f"--teacher {runs[0]}: its words ({', '.join(tcfg.labels)}) differ from the "
                              f"data's ({', '.join(cfg.labels)})")
    if tcfg.features != cfg.features:
        raise CheckpointError(f"--teacher {runs[0]}: its front-end differs from this training's "
                              f"({', '.join(tcfg.features.differing(cfg.features))})")
    return tcfg, model


class Teacher:
    """The averaged teacher runs on ``device``: feats (batch, frames, n_mfcc) -> soft targets."""

    def __init__(self, cfg: RunConfig, device: torch.device, amp: bool):
        _, model = check_teachers(cfg)
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device, self.amp = device, amp
        self.weight, self.temperature = cfg.train.distill_weight, cfg.train.distill_temperature

    @torch.no_grad()
    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """(batch, frames, n_mfcc) -> (batch, classes): log-probabilities up to a constant."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.model(feats).float()

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        """student, teacher (batch, classes) logits; hard: the label loss -> the combined loss."""
        t = self.temperature
        soft = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                        log_target=True, reduction="batchmean") * (t * t)
        return (1.0 - self.weight) * hard + self.weight * soft
