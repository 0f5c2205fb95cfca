"""The training loop: device-resident int16 clips, batch augmentation and features on the device.

    epoch's clips (datasets/sampler.py) -> batch slice of the int16 clips (device_clips.py)
    -> one step (train_step.py: augment -> MFCC -> SpecAugment -> BiLSTM -> cross-entropy -> AdamW)
    -> warm-up + cosine learning rate, validation, atomic checkpoints

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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .config import SILENCE, UNKNOWN, RunConfig
from .data import PreparedData
from .datasets.augment import Augmenter
from .datasets.sampler import EpochSampler, unknown_cap
from .device_clips import DeviceClips, evaluate_split, feature_stats, predict_probs, thresholds_from_validation
from .distill import Teacher
from .errors import CheckpointError
from .features import MFCC
from .malloc import keep_freed_memory
from .model import BiLSTMClassifier, WeightEMA, count_parameters
from .plots import plot_curves
from .train_step import TrainStep, make_optimizer, use_bf16


def get_lr(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up to ``base`` over ``warmup`` steps, then cosine decay to 2% of it."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * p)))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError("--device cuda: no CUDA device is available here")
    return torch.device(name)


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


def epoch_sampler(cfg: RunConfig, labels: np.ndarray, unknown: int | None, repeats: np.ndarray | None,
                  rank: int = 0, world: int = 1) -> EpochSampler:
    """The sampler of ``cfg``'s training: the capped ``_unknown_`` share drawn afresh each epoch when
    ``train.unknown_per_epoch`` is on (the split then holds all of them: ``data.prepare``)."""
    tc = cfg.train
    n_unknown = None
    if unknown is not None and tc.unknown_per_epoch:
        silence = cfg.labels.index(SILENCE) if SILENCE in cfg.labels else -1
        n_unknown = unknown_cap(int(np.sum((labels != unknown) & (labels != silence))), tc.unknown_fraction)
    return EpochSampler(labels, unknown, n_unknown, repeats, tc.batch_size, tc.seed, rank, world)


def budget_epochs(asked: int, budget_s: float, spent_s: float, epoch_s: float, after_epochs: float = 0.0,
                  done: int = 1) -> int:
    """The epochs of a run that fit in ``budget_s`` seconds, its first ``done`` epochs having ended
    ``spent_s`` seconds in and lasted ``epoch_s`` each, leaving ``after_epochs`` epochs' worth of time
    for work that follows the training (`kws demo`'s head, export and evaluation): never more than
    ``asked``, never fewer than MIN_BUDGET_EPOCHS (or ``asked``, where that is fewer)."""
    fit = done + int(max(0.0, budget_s - spent_s - after_epochs * epoch_s) // max(epoch_s, 1e-9))
    return max(min(asked, MIN_BUDGET_EPOCHS), min(asked, fit))


MIN_BUDGET_EPOCHS = 20     # fewer cost the demo 2-3 points (README, Results: the main job)


def train(cfg: RunConfig, data: PreparedData, run_dir: Path, device: torch.device,
          resume: bool = False, log=print, precision: str = "auto",
          init_weights: dict | None = None, repeats: np.ndarray | None = None,
          minutes: float | None = None, after_epochs: float = 0.0) -> TrainResult:
    """Train ``cfg`` on ``data`` into ``run_dir``; with ``resume`` continue from ``run_dir/last.pt``;
    with ``init_weights`` (a classifier state dict, normalisation included) fine-tune from them.
    ``repeats`` (train clips,): how often each clip is used per epoch (oversampling; default once).
    ``minutes``: a time budget. After the first epoch (the learning rate's warm-up, the same for any
    length), the run's epochs are lowered to those that fit (``budget_epochs``) and the cosine decay
    is laid over them, so the run ends as a shorter run would, not cut off; the config saved with the
    weights says how many it ran. After each later epoch the same is asked again with the mean epoch
    so far (a busy machine's epochs slow down: 24 s for the first, 30-35 s later on one such run) and
    the epochs only ever lowered, the decay laid over the rest. ``after_epochs``: time for what
    follows the training, in epochs of this machine (``budget_epochs``). Tunes glibc's allocator for
    the process (pipeline/malloc.py: a CPU epoch about 20% faster)."""
    t_start = time.time()
    keep_freed_memory()
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

    unknown = cfg.labels.index(UNKNOWN) if UNKNOWN in cfg.labels else None
    sampler = epoch_sampler(cfg, data.splits["train"].labels, unknown, repeats, rank, world)
    steps_per_epoch = sampler.steps_per_epoch
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
    keywords = torch.tensor([not l.startswith("_") for l in cfg.labels])
    teacher = Teacher(cfg, device, amp) if tc.teachers else None
    step_fn = TrainStep(net, model, frontend, augment, opt, tc, device, amp, unknown, keywords, teacher)
    if main:
        why = ([f"{sampler.n_unknown} of the {len(sampler.unknown)} _unknown_ drawn each epoch"] if sampler.resampled
               else []) + (["--repeat"] if repeats is not None else [])
        log(f"model: {count_parameters(model):,} parameters; {len(train_clips)} train / {len(val_clips)} val "
            f"clips" + (f" ({sampler.uses_per_epoch} uses per epoch: {', '.join(why)})" if why else "")
            + f"; {len(cfg.labels)} labels; device {device}" + (f" x{world}" if distributed else "")
            + (" (bf16 autocast)" if amp else " (fp32)"))

    t0 = time.time()
    epoch_times: list[float] = []
    for epoch in range(start_epoch, tc.epochs):
        if epoch >= tc.epochs:                   # lowered by the time budget
            break
        net.train()
        perm = sampler.epoch(epoch)
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
        epoch_times.append(time.time() - te)
        if minutes and start_epoch == 0 and epoch + 1 < tc.epochs:
            n = budget_epochs(tc.epochs, 60 * minutes, time.time() - t_start, float(np.mean(epoch_times)),
                              after_epochs, done=epoch + 1)
            if distributed:                      # every process runs rank 0's number
                n_t = torch.tensor([n], device=device)
                dist.broadcast(n_t, 0)
                n = int(n_t.item())
            if main and epoch == 0:
                keep = f", {after_epochs:g} epochs' time kept for what follows" if after_epochs else ""
                log(f"time budget {minutes:g} min: {n} epochs of {epoch_times[0]:.1f} s fit "
                    f"(--epochs {tc.epochs}{', lowered' if n < tc.epochs else ''}{keep})")
            elif main and n < tc.epochs:
                log(f"time budget: epochs of {np.mean(epoch_times):.1f} s on average so far, {n} epochs fit "
                    f"(lowered from {tc.epochs})")
            if n < tc.epochs or epoch == 0:
                cfg = replace(cfg, train=replace(tc, epochs=n))
                tc = cfg.train
                total_steps = steps_per_epoch * tc.epochs
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
