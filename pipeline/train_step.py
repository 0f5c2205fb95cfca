"""One optimisation step on a batch, everything on the training device.

    waveform (batch, samples) -> augment -> MFCC -> time warp, mixup -> SpecAugment
    -> BiLSTM (bf16 autocast where it pays) -> label-smoothed cross-entropy -> AdamW

``kws train`` (``train.py``) and ``scripts/bench_train.py`` run the same ``TrainStep``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .datasets.augment import Augmenter
from .features import MFCC, spec_augment, time_warp
from .model import BiLSTMClassifier, log_mean_probs


def use_bf16(device: torch.device, precision: str = "auto") -> bool:
    """bf16 autocast for the model: on CUDA, and on CPUs with native bf16 (AVX512-BF16, AMX),
    where it runs the LSTM ~1.5x faster (measured: scripts/bench_train.py); fp32 elsewhere.
    oneDNN also "supports" bf16 on any AVX-512 CPU, by emulation: on one without AVX512-BF16
    (Cascade Lake) an epoch of the default run took 52 s in bf16 against 14 s in fp32, so its own
    check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is not the one to ask."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    return native_cpu_bf16()


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):          # another torch: plain fp32, never the slow emulation
        return False


def mixup(feats: torch.Tensor, alpha: float) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """(batch, frames, n_mfcc) -> (mixed features, (lam (batch,), partner index (batch,))), or the
    features and None for ``alpha`` 0. Each clip is mixed with another clip of the batch at its own
    lam ~ Beta(alpha, alpha), folded to >= 0.5 so that its own label stays the larger share."""
    if alpha <= 0:
        return feats, None
    b = feats.shape[0]
    lam = torch.distributions.Beta(alpha, alpha).sample((b,)).to(feats.device)
    lam = torch.maximum(lam, 1 - lam)
    other = torch.randperm(b, device=feats.device)
    mixed = lam.view(b, 1, 1) * feats + (1 - lam.view(b, 1, 1)) * feats[other]
    return mixed, (lam, other)


def make_optimizer(model: torch.nn.Module, tc, device: torch.device) -> torch.optim.AdamW:
    """AdamW as training uses it: on CUDA the fused kernel (one launch for all parameters, where the
    default runs several per tensor group), elsewhere the default implementation."""
    return torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                             fused=device.type == "cuda")


class TrainStep:
    """One optimisation step on a batch, everything on ``device``:

    int16-derived waveform (batch, samples) -> augment -> MFCC (FFT, VTLP-warped filterbank)
    -> time warp and mixup (when configured) -> SpecAugment -> BiLSTM (bf16 autocast where
    :func:`use_bf16`) -> label-smoothed cross-entropy -> backward -> clip -> AdamW.
    The training command and scripts/bench_train.py both use it.
    """

    def __init__(self, net: torch.nn.Module, model: BiLSTMClassifier, frontend: MFCC, augment: Augmenter,
                 opt: torch.optim.Optimizer, tc, device: torch.device, amp: bool | None = None,
                 unknown_index: int | None = None, keyword_mask: torch.Tensor | None = None, teacher=None):
        self.net, self.model, self.frontend, self.augment, self.opt, self.tc = net, model, frontend, augment, opt, tc
        self.teacher = teacher                       # a distill.Teacher, or None
        self.device, self.amp = device, use_bf16(device) if amp is None else amp
        # keyword_mask (classes,) bool: labels whose clips may be cut to a fragment -> unknown_index
        self.unknown_index = unknown_index
        self.keyword_mask = None if keyword_mask is None or unknown_index is None else keyword_mask.to(device)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (loss, logits (batch, classes), labels), all on the device."""
        feats, y, mix, soft = self.inputs(x, y)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            towers = self.net(feats, towers=True).float()              # (towers, batch, classes)
        # each tower learns from its own loss, as the members of an ensemble do
        loss = torch.stack([self.loss(t, y, mix, soft) for t in towers]).mean()
        logits = log_mean_probs(towers)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.grad_clip)
        self.opt.step()
        return loss.detach(), logits.detach(), y

    @torch.no_grad()
    def inputs(self, x: torch.Tensor, y: torch.Tensor):
        """The input half of a step: int16-derived waveform (batch, samples) and labels (batch,) ->
        (features (batch, frames, n_mfcc) augmented, labels (fragments relabelled), mixup pairs or
        None, the teachers' logits or None), all on the device."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device)
        a = self.tc.augment
        lo, hi = a.vtlp
        warp = None if lo == hi == 1.0 else lo + (hi - lo) * torch.rand(len(x), device=x.device)
        wave, cut = self.augment(x, None if self.keyword_mask is None else self.keyword_mask[y])
        if self.keyword_mask is not None:
            y = torch.where(cut, torch.full_like(y, self.unknown_index), y)
        feats = time_warp(self.frontend(wave, warp), a.time_warp_frames)
        feats, mix = mixup(feats, self.tc.mixup_alpha)
        soft = self.teacher.logits(feats) if self.teacher is not None else None
        feats = spec_augment(feats, a.time_masks, a.time_mask_frames, a.freq_masks, a.freq_mask_bins,
                             fill=self.model.feat_mean)
        return feats, y, mix, soft

    def loss(self, logits: torch.Tensor, y: torch.Tensor, mix, soft: torch.Tensor | None) -> torch.Tensor:
        """(batch, classes) logits of one tower -> label-smoothed cross-entropy (mixed labels with
        mixup, and the teachers' term with distillation)."""
        if mix is None:
            loss = F.cross_entropy(logits, y, label_smoothing=self.tc.label_smoothing)
        else:
            lam, other = mix
            ce = lambda t: F.cross_entropy(logits, t, label_smoothing=self.tc.label_smoothing, reduction="none")
            loss = (lam * ce(y) + (1 - lam) * ce(y[other])).mean()
        return loss if soft is None else self.teacher.loss(logits, soft, loss)
