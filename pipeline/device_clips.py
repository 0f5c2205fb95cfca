"""A split's int16 clips where training runs, and what is computed over a whole split.

    DeviceClips      the clips as one int16 array (on a GPU: in its memory), batches sliced by index
    upload           a split's int16 array (a read-only memmap) onto the GPU, a chunk of clips at a time
    feature_stats    (n_mfcc,) mean and std of the clean training features: the model's normalisation
    evaluate_split   mean loss, accuracy and predictions on clean audio (validation, test)
    predict_probs    (clips, classes) clean-audio probabilities
    thresholds_from_validation   per-word streaming thresholds from those probabilities

Training (``train.py``), ``scripts/bench_train.py`` and ``scripts/rethreshold.py`` use them.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .features import MFCC


def upload(audio: np.ndarray, device: torch.device, chunk: int = 8192) -> torch.Tensor:
    """(clips, samples) int16, e.g. a read-only memmap -> the same values as one tensor on ``device``,
    copied ``chunk`` clips at a time: no second whole copy in host memory, and no warning about
    handing torch a read-only array."""
    out = torch.empty(audio.shape, dtype=torch.int16, device=device)
    for i in range(0, len(audio), chunk):
        out[i:i + chunk] = torch.from_numpy(np.array(audio[i:i + chunk], dtype=np.int16))
    return out


class DeviceClips:
    """A split's int16 clips where batches are sliced: the whole array on a GPU, the memmap on CPU."""

    def __init__(self, audio: np.ndarray, labels: np.ndarray, device: torch.device):
        self.device = device
        self.on_device = device.type == "cuda"
        if self.on_device:
            self.audio = upload(audio, device)
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
                               quantile: float = 0.999, floor: float = 0.85) -> dict[str, float]:
    """Per-label detection thresholds for streaming: above the ``quantile`` of that label's score
    on validation clips of other labels, and at least ``floor``. Clean, centred validation clips
    are easier than a stream's partial words, so the floor usually decides (stream-eval's DET
    curve: a floor of 0.5 gave ~400 false accepts per hour on synthetic speakers, 0.8 ~70). With 3
    windows smoothed instead of 5 (SMOOTH_WINDOWS) 0.85 instead of 0.8: the twenty-fourth session's
    demo BiLSTM alone on its test hour, 0.8 95.4% hits at 29 false accepts/hour, 0.85 93.4% at 16
    (5 windows at 0.8: 93.7% at 12, median latency 234 ms against 99)."""
    out = {}
    for k, name in enumerate(labels):
        if name.startswith("_"):
            continue
        neg = probs[truth != k, k]
        q = float(np.quantile(neg, quantile)) if len(neg) else floor
        out[name] = round(min(0.97, max(floor, q + 0.05)), 3)
    return out
