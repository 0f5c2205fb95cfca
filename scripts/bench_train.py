#!/usr/bin/env python
"""Training throughput: the naive input pipeline against the project's, in the same process.

Workload: a Speech-Commands-sized set made in memory (default 85,000 one-second int16 clips,
35 classes, random audio: no download), the default model (pipeline.config.ModelConfig), the median
step time over a fixed number of steps after warm-up (the mean printed beside it; on CUDA the mean of
one timed run of them all), on CUDA when present, else CPU.

    (a) naive:   a Dataset computing augmentation (shift, noise) and MFCC per item in __getitem__,
                 a DataLoader with worker processes, the model in fp32
    (b) project: pipeline.train_step.TrainStep, the exact step `kws train` runs: clips held as one int16
                 tensor (on the GPU when there is one), batches sliced on the device, augmentation
                 and MFCC on the whole batch on the device, bf16 autocast (on CUDA, and on CPUs
                 with native bf16: AVX512-BF16/AMX) + cuDNN LSTM and fused AdamW on CUDA, glibc's
                 allocator told to keep freed memory (pipeline/malloc.py; (a) runs first, with
                 glibc's defaults); it also times the step's input half alone, to show where a step's time goes

Last line: device=... naive_clips_per_s=... clips_per_s=... speedup=... epoch_s_85k=...
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import MAX_FRAME_STACK, AugmentConfig, FeatureConfig, ModelConfig, TrainConfig  # noqa: E402
from pipeline.datasets.augment import Augmenter  # noqa: E402
from pipeline.datasets.noise import synthetic_noises  # noqa: E402
from pipeline.features import MFCC  # noqa: E402
from pipeline.model import BiLSTMClassifier  # noqa: E402
from pipeline.device_clips import DeviceClips  # noqa: E402
from pipeline.malloc import keep_freed_memory  # noqa: E402
from pipeline.train_step import TrainStep, make_optimizer, use_bf16  # noqa: E402


class NaiveDataset(torch.utils.data.Dataset):
    """Per-item work: int16 -> float, random shift, noise at a random SNR, MFCC of one clip."""

    def __init__(self, audio: np.ndarray, labels: np.ndarray, noise: np.ndarray, feats: FeatureConfig):
        self.audio, self.labels, self.noise = audio, labels, noise
        self.mfcc = MFCC(feats)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        rng = np.random.default_rng(i)
        x = self.audio[i].astype(np.float32) / 32768
        x = np.roll(x, rng.integers(-1600, 1600))
        start = rng.integers(0, len(self.noise) - len(x))
        n = self.noise[start:start + len(x)]
        snr = rng.uniform(0, 25)
        x = x + n * np.sqrt((x ** 2).mean() / 10 ** (snr / 10))
        with torch.no_grad():
            f = self.mfcc(torch.from_numpy(x)[None])[0]
        return f, int(self.labels[i])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(step, batches, warmup: int, steps: int, device: torch.device) -> tuple[float, float]:
    """(median, mean) seconds of one step over ``steps`` timed steps, after ``warmup`` untimed ones:
    a shared machine's slow spells (another process on a core) move the median less than the mean.
    On CUDA both are the mean of one timed run of all the steps (the GPU runs them queued)."""
    it = iter(batches)
    for _ in range(warmup):
        step(*next(it))
    if device.type == "cuda":                 # one sync per step would stall the GPU's queue: time them all at once
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps):
            step(*next(it))
        torch.cuda.synchronize()
        per_step = (time.perf_counter() - t) / steps
        return per_step, per_step
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step(*next(it))                       # the wait for the batch counts: the naive path's loader is its cost
        times.append(time.perf_counter() - t)
    return statistics.median(times), statistics.fmean(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=85000, help="clips in the in-memory workload (default 85000)")
    ap.add_argument("--classes", type=int, default=35, help="classes (default 35, as Speech Commands v2)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per path (default 50 on CUDA, 10 on CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10 on CUDA, 2 on CPU)")
    ap.add_argument("--batch-size", type=int, default=None, help="project path batch (default 512 on CUDA, 128 on CPU)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the naive path (default 2)")
    ap.add_argument("--frame-stack", type=int, choices=range(1, MAX_FRAME_STACK + 1), metavar="K",
                    default=ModelConfig.frame_stack, help="MFCC frames per LSTM step "
                    f"in both paths' model (default {ModelConfig.frame_stack}, the training default)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                    help="project path's model precision (default auto: bf16 on CUDA and on CPUs with native bf16)")
    a = ap.parse_args()
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    cuda = device.type == "cuda"
    steps, warmup = a.steps or (50 if cuda else 10), a.warmup or (10 if cuda else 2)
    bs = a.batch_size or (512 if cuda else 128)
    feats = FeatureConfig()
    rng = np.random.default_rng(0)
    print(f"making {a.clips} clips in memory ({a.clips * feats.clip_samples * 2 / 1e9:.2f} GB int16) ...", flush=True)
    audio = np.empty((a.clips, feats.clip_samples), np.int16)
    base = (rng.standard_normal(feats.clip_samples * 64) * 3000).astype(np.int16)
    for i in range(0, a.clips, 64):
        k = min(64, a.clips - i)
        audio[i:i + k] = np.roll(base, i).reshape(64, -1)[:k]
    labels = rng.integers(0, a.classes, a.clips)
    noise_bank = list(synthetic_noises(feats.sample_rate, 30.0, 0).values())
    mcfg = ModelConfig(n_classes=a.classes, frame_stack=a.frame_stack)     # the default model

    # (a) naive
    torch.manual_seed(0)
    model = BiLSTMClassifier(mcfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ds = NaiveDataset(audio, labels, noise_bank[1], feats)
    dl = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=True, num_workers=a.workers,
                                     persistent_workers=a.workers > 0, pin_memory=cuda)

    def naive_step(x, y):
        x, y = x.to(device), y.to(device)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_naive, mean_naive = time_steps(naive_step, dl, warmup, steps, device)
    naive_cps = 128 / t_naive
    del dl
    print(f"(a) naive   : {naive_cps:9.0f} clips/s  ({t_naive * 1000:.0f} ms per batch of 128, median; mean {mean_naive * 1000:.0f})", flush=True)

    # (b) project
    tuned = keep_freed_memory()       # what `kws train` does first (pipeline/malloc.py); (a) ran without
    torch.manual_seed(0)
    tc = TrainConfig(batch_size=bs, lr=3e-3 * bs / 128)
    model = BiLSTMClassifier(mcfg).to(device)
    opt = make_optimizer(model, tc, device)
    torch.backends.cudnn.benchmark = cuda                    # as `kws train` sets it
    clips = DeviceClips(audio, labels, device)
    step = TrainStep(model, model, MFCC(feats).to(device), Augmenter(AugmentConfig(), feats, noise_bank, device),
                     opt, tc, device, amp=use_bf16(device, a.precision))
    gen = torch.Generator().manual_seed(0)

    def batches():
        while True:
            perm = torch.randperm(len(clips), generator=gen)
            for i in range(0, len(perm) - bs + 1, bs):
                idx = perm[i:i + bs]
                yield clips.batch(idx.to(device) if clips.on_device else idx)

    t_ours, mean_ours = time_steps(step, batches(), warmup, steps, device)
    cps = bs / t_ours
    print(f"(b) project : {cps:9.0f} clips/s  ({t_ours * 1000:.0f} ms per batch of {bs}, median; mean {mean_ours * 1000:.0f})", flush=True)
    t_in, _ = time_steps(step.inputs, batches(), warmup, steps, device)
    print(f"    of which the input half (augmentation, MFCC, SpecAugment) alone: {t_in * 1000:.1f} ms "
          f"per batch ({100 * t_in / t_ours:.0f}%); the model's forward, backward and AdamW the rest")
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    name += (", bf16 autocast" if step.amp else ", fp32") + (", glibc malloc kept freed memory" if tuned else "")
    print(f"device {name}; peak RSS {peak_rss_mb():.0f} MB"
          + (f"; peak GPU memory {torch.cuda.max_memory_allocated(device) / 1e9:.2f} GB" if cuda else ""))
    print(f"device={device.type} naive_clips_per_s={naive_cps:.0f} clips_per_s={cps:.0f} speedup={cps / naive_cps:.2f} "
          f"epoch_s_85k={85000 / cps:.1f}")


if __name__ == "__main__":
    main()
