"""The training loop: device-resident int16 clips, batch augmentation and features on the device.

    clips (int16, on the device) -> batch slice -> augment -> MFCC (FFT) -> SpecAugment
    -> BiLSTM -> cross-entropy -> AdamW (warm-up + cosine), gradient clipping

CUDA when present (cuDNN LSTM, bf16 autocast), CPU otherwise. Multi-GPU (or multi-process CPU)
through ``torchrun``: each rank takes a strided share of every epoch's permutation and the
gradients are averaged by DistributedDataParallel. Rank 0 writes ``RUN/``:

    last.pt, best.pt    checkpoints (atomic): weights, optimiser, config, labels, epoch, RNG state
    metrics.jsonl       one line per epoch
    curves.png          loss and accuracy curves
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import CheckpointError
from .config import UNKNOWN, RunConfig
from .data import PreparedData
from .datasets.augment import Augmenter
from .distill import Teacher
from .features import MFCC, spec_augment, time_warp
from .model import BiLSTMClassifier, WeightEMA, count_parameters, log_mean_probs
from .plots import plot_curves


def get_lr(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up to ``base`` over ``warmup`` steps, then cosine decay to 2% of it."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * p)))


def use_bf16(device: torch.device, precision: str = "auto") -> bool:
    """bf16 autocast for the model: on CUDA, and on CPUs with native bf16 (AVX512-BF16, AMX),
    where it runs the LSTM ~1.5x faster (measured: scripts/bench_train.py); fp32 elsewhere."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):          # a build without oneDNN: plain fp32
        return False


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError("--device cuda: no CUDA device is available here")
    return torch.device(name)


class DeviceClips:
    """A split's int16 clips where batches are sliced: the whole array on a GPU, the memmap on CPU."""

    def __init__(self, audio: np.ndarray, labels: np.ndarray, device: torch.device):
        self.device = device
        self.on_device = device.type == "cuda"
        if self.on_device:
            self.audio = torch.from_numpy(np.ascontiguousarray(audio)).to(device)
        else:
            self.audio = audio
        self.labels = torch.from_numpy(np.asarray(labels)).to(device)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """idx (batch,) -> waveform (batch, samples) float32 in [-1, 1], labels (batch,)."""
        if self.on_device:
            x = self.audio[idx]
        else:
            order = np.sort(idx.numpy())                       # sequential reads from the memmap
            x = torch.from_numpy(np.asarray(self.audio[order]))
            idx = torch.from_numpy(order)
        return x.float() / 32768.0, self.labels[idx.to(self.labels.device)]


@torch.no_grad()
def feature_stats(clips: DeviceClips, frontend: MFCC, max_clips: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coefficient mean and std of the (clean) training features: (n_mfcc,) each."""
    n = min(len(clips), max_clips)
    idx = torch.linspace(0, len(clips) - 1, n).long()
    s = s2 = count = 0
    for part in idx.split(512):
        x, _ = clips.batch(part)
        f = frontend(x.to(clips.device)).double()
        s, s2, count = s + f.sum((0, 1)), s2 + (f * f).sum((0, 1)), count + f.shape[0] * f.shape[1]
    mean = s / count
    return mean.float(), (s2 / count - mean * mean).clamp(min=0).sqrt().float()


@torch.no_grad()
def evaluate_split(model: torch.nn.Module, frontend: MFCC, clips: DeviceClips, batch_size: int,
                   amp: bool) -> tuple[float, float, np.ndarray]:
    """-> (mean loss, accuracy, predictions) on clean audio."""
    model.eval()
    loss_sum, preds = 0.0, []
    for part in torch.arange(len(clips)).split(batch_size):
        x, y = clips.batch(part)
        x, y = x.to(clips.device, non_blocking=True), y.to(clips.device)
        with torch.autocast(clips.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(frontend(x)).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        preds.append(logits.argmax(-1).cpu())
    p = torch.cat(preds).numpy() if preds else np.zeros(0, np.int64)
    labels = clips.labels.cpu().numpy()
    return loss_sum / max(1, len(clips)), float((p == labels).mean()) if len(p) else float("nan"), p


@torch.no_grad()
def predict_probs(model: torch.nn.Module, frontend: MFCC, clips: DeviceClips, batch_size: int) -> np.ndarray:
    """Clean-audio class probabilities: (clips, classes)."""
    model.eval()
    out = [torch.softmax(model(frontend(clips.batch(part)[0].to(clips.device))).float(), -1).cpu()
           for part in torch.arange(len(clips)).split(batch_size)]
    return torch.cat(out).numpy()


def thresholds_from_validation(probs: np.ndarray, truth: np.ndarray, labels: tuple[str, ...],
                               quantile: float = 0.999, floor: float = 0.8) -> dict[str, float]:
    """Per-label detection thresholds for streaming: above the ``quantile`` of that label's score
    on validation clips of other labels, and at least ``floor``. Clean, centred validation clips
    are easier than a stream's partial words, so the floor usually decides (stream-eval's DET
    curve: a floor of 0.5 gave ~400 false accepts per hour on synthetic speakers, 0.8 ~70)."""
    out = {}
    for k, name in enumerate(labels):
        if name.startswith("_"):
            continue
        neg = probs[truth != k, k]
        q = float(np.quantile(neg, quantile)) if len(neg) else floor
        out[name] = round(min(0.97, max(floor, q + 0.05)), 3)
    return out


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


@dataclass
class TrainResult:
    best_val_acc: float
    test_acc: float
    epochs: int
    seconds: float
    run_dir: Path


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def train(cfg: RunConfig, data: PreparedData, run_dir: Path, device: torch.device,
          resume: bool = False, log=print, precision: str = "auto",
          init_weights: dict | None = None, repeats: np.ndarray | None = None) -> TrainResult:
    """Train ``cfg`` on ``data`` into ``run_dir``; with ``resume`` continue from ``run_dir/last.pt``;
    with ``init_weights`` (a classifier state dict, normalisation included) fine-tune from them.
    ``repeats`` (train clips,): how often each clip is used per epoch (oversampling; default once)."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    main = rank == 0
    tc = cfg.train
    torch.manual_seed(tc.seed + rank)
    np.random.seed(tc.seed + rank)
    random.seed(tc.seed + rank)
    run_dir.mkdir(parents=True, exist_ok=True)
    amp = use_bf16(device, precision)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    train_clips = DeviceClips(data.splits["train"].audio, data.splits["train"].labels, device)
    val_clips = DeviceClips(data.splits["val"].audio, data.splits["val"].labels, device)
    frontend = MFCC(cfg.features).to(device)
    model = BiLSTMClassifier(cfg.model).to(device)
    augment = Augmenter(tc.augment, cfg.features, data.noise_bank, device)

    pool = torch.arange(len(train_clips))             # an epoch's clip indices, oversampled ones repeated
    if repeats is not None:
        pool = torch.repeat_interleave(pool, torch.as_tensor(repeats, dtype=torch.long))
    steps_per_epoch = max(1, len(pool) // (tc.batch_size * world))
    total_steps = steps_per_epoch * tc.epochs
    opt = make_optimizer(model, tc, device)
    start_epoch, best_acc, history = 0, -1.0, []
    if resume:
        ck = load_checkpoint(run_dir / "last.pt", expect=cfg)
        model.load_state_dict(ck.get("train_model", ck["model"]))
        opt.load_state_dict(ck["optimizer"])
        start_epoch, best_acc, history = ck["epoch"], ck["best_val_acc"], ck.get("history", [])
        _set_rng_state(ck["rng"])
        if main:       # drop lines of epochs that ran after this checkpoint was written
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        if main:
            log(f"resuming {run_dir} after epoch {start_epoch} (best val acc {best_acc:.4f})")
    else:
        if init_weights is not None:             # its normalisation statistics come with it
            model.load_state_dict(init_weights)
        else:
            mean, std = feature_stats(train_clips, frontend)
            model.set_normalisation(mean.to(device), std.to(device))
        if main:
            (run_dir / "metrics.jsonl").write_text("")
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    ema = WeightEMA(model, tc.ema_decay) if tc.ema_decay > 0 else None
    if ema is not None and resume:
        ema.model.load_state_dict(ck["model"])
        ema.updates = start_epoch * steps_per_epoch
    kept_model = ema.model if ema is not None else model      # what is validated, saved and exported
    unknown = cfg.labels.index(UNKNOWN) if UNKNOWN in cfg.labels else None
    keywords = torch.tensor([not l.startswith("_") for l in cfg.labels])
    teacher = Teacher(cfg, device, amp) if tc.teachers else None
    step_fn = TrainStep(net, model, frontend, augment, opt, tc, device, amp, unknown, keywords, teacher)
    if main:
        log(f"model: {count_parameters(model):,} parameters; {len(train_clips)} train / {len(val_clips)} val "
            f"clips" + (f" ({len(pool)} uses per epoch with --repeat)" if len(pool) != len(train_clips) else "")
            + f"; {len(cfg.labels)} labels; device {device}" + (f" x{world}" if distributed else "")
            + (" (bf16 autocast)" if amp else " (fp32)"))

    t0 = time.time()
    gen = torch.Generator().manual_seed(tc.seed)
    for _ in range(start_epoch):                     # keep the permutation stream aligned on resume
        torch.randperm(len(pool), generator=gen)
    for epoch in range(start_epoch, tc.epochs):
        net.train()
        perm = pool[torch.randperm(len(pool), generator=gen)][rank::world]
        te, seen = time.time(), 0
        loss_sum = torch.zeros((), device=device)            # summed on the device: no sync per step
        correct = torch.zeros((), dtype=torch.long, device=device)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{tc.epochs}", unit="batch",
                   leave=False, disable=not main)
        for i in bar:
            step = epoch * steps_per_epoch + i
            for g in opt.param_groups:
                g["lr"] = get_lr(step, total_steps, int(tc.warmup_epochs * steps_per_epoch), tc.lr)
            idx = perm[i * tc.batch_size:(i + 1) * tc.batch_size]
            x, y = train_clips.batch(idx.to(device) if train_clips.on_device else idx)
            loss, logits, y = step_fn(x, y)
            if ema is not None:
                ema.update(model)
            loss_sum += loss * len(y)
            correct += (logits.argmax(-1) == y).sum()
            seen += len(y)
            if i % 20 == 0 or i == steps_per_epoch - 1:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}")
        loss_sum, correct = loss_sum.item(), correct.item()
        val_loss, val_acc, _ = evaluate_split(kept_model, frontend, val_clips, 512, amp)
        if not main:
            continue
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, seen), "train_acc": correct / max(1, seen),
               "val_loss": val_loss, "val_acc": val_acc, "lr": opt.param_groups[0]["lr"],
               "seconds": round(time.time() - te, 2)}
        history.append(rec)
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        improved = val_acc > best_acc
        best_acc = max(best_acc, val_acc)
        state = {"model": kept_model.state_dict(), "optimizer": opt.state_dict(), "config": cfg.to_dict(),
                 "labels": list(cfg.labels), "epoch": epoch + 1, "best_val_acc": best_acc,
                 "history": history, "rng": _rng_state()}
        if ema is not None:                          # the raw weights, to resume training from
            state["train_model"] = model.state_dict()
        save_checkpoint(state, run_dir / "last.pt")
        if improved:
            save_checkpoint(state, run_dir / "best.pt")
        plot_curves(history, run_dir / "curves.png")
        log(f"epoch {epoch + 1:3d}  loss {rec['train_loss']:.3f}  train {rec['train_acc']:.3f}  "
            f"val {val_acc:.4f}{' *' if improved else ''}  ({rec['seconds']:.1f}s)")

    test_acc = float("nan")
    if main and len(data.splits["test"]):
        best = load_checkpoint(run_dir / "best.pt", expect=cfg)
        model.load_state_dict(best["model"])
        test_clips = DeviceClips(data.splits["test"].audio, data.splits["test"].labels, device)
        _, test_acc, _ = evaluate_split(model, frontend, test_clips, 512, amp)
        log(f"test accuracy (best checkpoint, held-out speakers): {test_acc:.4f}")
    if main:
        model.load_state_dict(load_checkpoint(run_dir / "best.pt", expect=cfg)["model"])
        probs = predict_probs(model, frontend, val_clips, 512)
        th = thresholds_from_validation(probs, val_clips.labels.cpu().numpy(), cfg.labels)
        (run_dir / "thresholds.json").write_text(json.dumps(th, indent=1))
    return TrainResult(best_acc, test_acc, tc.epochs, time.time() - t0, run_dir)
