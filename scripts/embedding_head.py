#!/usr/bin/env python
"""A classifier on Google's pretrained speech embedding, trained on a (synthetic) dataset, and how it
does on real people, alone and averaged with the project's MFCC BiLSTM models.

    python scripts/embedding_head.py --data data/synth --out runs/emb_head \
        [--bilstm runs/default/model.onnx ...] [--copies 6] [--seed 0] [--shared ../shared/data]

1. Every training clip, clean and in ``--copies - 1`` augmented copies (the training's own
   augmentation: speed, shift, channel, reverb, noise, gain), goes through the speech embedding
   (pipeline/speech_embedding.py): (clips, windows, 96), windows 80 ms apart.
2. A small head learns the labels: each run of three consecutive embedding vectors (240 ms of
   context, 935 ms of audio) -> MLP -> log-probabilities, averaged in probability over the
   positions, so a word scores the same wherever it sits in the clip.
3. Held-out synthetic speakers (val, test), FSDD and the Speech Commands subset are scored; each
   --bilstm model (an exported model.onnx with the same words) alone, and its probabilities averaged
   with the head's.

Writes OUT/head.pt (weights, labels, settings) and OUT/report.json; the last line is name=value pairs.
Trained on data the run decodes with the project's cache (``--cache-dir``, as `kws train`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.audio import load_clip  # noqa: E402
from pipeline.config import UNKNOWN, FeatureConfig, TrainConfig  # noqa: E402
from pipeline.data import prepare  # noqa: E402
from pipeline.datasets.augment import Augmenter  # noqa: E402
from pipeline.errors import KwsError  # noqa: E402
from pipeline.runtime import OnnxModel  # noqa: E402
from pipeline.speech_embedding import DIM, SpeechEmbedding  # noqa: E402


class EmbeddingHead(nn.Module):
    """(batch, windows, 96) -> (batch, classes) log-probabilities; needs windows >= ``context``."""

    def __init__(self, n_classes: int, hidden: int = 256, dropout: float = 0.3, context: int = 3):
        super().__init__()
        self.context = context
        self.net = nn.Sequential(nn.Linear(context * DIM, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[1] - self.context + 1
        ctx = torch.cat([x[:, k:k + w] for k in range(self.context)], dim=-1)     # (batch, positions, c*96)
        lp = torch.log_softmax(self.net(ctx), dim=-1)
        return torch.logsumexp(lp, dim=1) - float(np.log(w))                      # mean probability


def embed_split(emb: SpeechEmbedding, audio: np.ndarray, augment: Augmenter | None, desc: str,
                batch: int = 256) -> np.ndarray:
    """(clips, samples) int16 -> (clips, windows, 96); augmented when ``augment`` is given."""
    out = []
    for i in tqdm(range(0, len(audio), batch), desc=desc, unit="batch", leave=False):
        x = torch.from_numpy(audio[i:i + batch].astype(np.float32) / 32768.0)
        if augment is not None:
            x, _ = augment(x)
        out.append(emb(x.numpy()))
    return np.concatenate(out)


def train_head(x: np.ndarray, y: np.ndarray, n_classes: int, epochs: int, seed: int) -> EmbeddingHead:
    """AdamW, one-cycle schedule, label smoothing 0.05, batches of 256."""
    torch.manual_seed(seed)
    head = EmbeddingHead(n_classes)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps = (len(xt) + 255) // 256
    opt = torch.optim.AdamW(head.parameters(), 1e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * steps)
    head.train()
    for _ in tqdm(range(epochs), desc="head", unit="epoch", leave=False):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 256):
            b = perm[i:i + 256]
            # the head's output is normalised log-probabilities, which log_softmax leaves as they are
            loss = F.cross_entropy(head(xt[b]), yt[b], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return head.eval()


def batched(fn, x: np.ndarray, n: int = 256) -> np.ndarray:
    """``fn`` over ``x`` in batches of ``n`` along the first axis, concatenated."""
    return np.concatenate([fn(x[i:i + n]) for i in range(0, len(x), n)])


@torch.no_grad()
def probs(head: EmbeddingHead, x: np.ndarray) -> np.ndarray:
    return torch.cat([head(torch.from_numpy(x[i:i + 1024])).exp() for i in range(0, len(x), 1024)]).numpy()


def real_set(root: Path, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """<root>/<word>/*.wav -> (clips, 16000) float32 (short files padded with the quiet floor, as
    `kws evaluate` pads them), labels (clips,) (other words -> _unknown_)."""
    files = sorted(root.glob("*/*.wav"))
    unk = labels.index(UNKNOWN)
    wave = np.stack([load_clip(f, 16000, 16000) for f in tqdm(files, desc=root.name, unit="clip", leave=False)])
    return wave, np.array([labels.index(f.parent.name) if f.parent.name in labels else unk for f in files])


def scores(p: np.ndarray, y: np.ndarray, unk: int) -> dict:
    pred = p.argmax(1)
    kw = y != unk
    out = {"words": float(np.mean(pred[kw] == y[kw])), "all": float(np.mean(pred == y)), "clips": int(len(y))}
    if (~kw).any():
        out["unknown_rejected"] = float(np.mean(pred[~kw] == unk))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, nargs="+", required=True, help="training dataset folder(s), as for `kws train`")
    ap.add_argument("--out", type=Path, required=True, help="folder for head.pt and report.json")
    ap.add_argument("--bilstm", type=Path, nargs="*", default=[], help="exported model.onnx files to score alone "
                    "and averaged with the head")
    ap.add_argument("--copies", type=int, default=6, help="embedded copies of each training clip: the clean one "
                    "and copies-1 augmented (default 6)")
    ap.add_argument("--epochs", type=int, default=60, help="head training epochs over all copies (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="augmentation and head initialisation seed (default 0)")
    ap.add_argument("--cache-dir", type=Path, default=Path("data/cache"), help="int16 clip cache (default data/cache)")
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                    help="folder with fsdd/ and gsc_subset/ (default ../shared/data); missing sets are skipped")
    a = ap.parse_args()
    try:
        if a.copies < 1 or a.epochs < 1:
            raise KwsError("--copies and --epochs: must be at least 1")
        run(a)
    except KwsError as e:
        sys.exit(f"error: {e}")


def run(a: argparse.Namespace) -> None:
    t0 = time.time()
    feats, tc = FeatureConfig(), TrainConfig(seed=a.seed)
    models = [OnnxModel(m) for m in a.bilstm]             # a missing model fails before any decoding
    data = prepare(a.data, feats, tc, a.cache_dir, jobs=2)
    labels = list(data.labels)
    unk = labels.index(UNKNOWN)
    for m, path in zip(models, a.bilstm):
        if list(m.labels) != labels:
            raise KwsError(f"--bilstm {path}: its words differ from the data's")
    emb = SpeechEmbedding()
    torch.manual_seed(a.seed)
    aug = Augmenter(tc.augment, feats, data.noise_bank, "cpu")
    tr = data.splits["train"]
    xs = [embed_split(emb, tr.audio, aug if c else None, f"embed train {c + 1}/{a.copies}") for c in range(a.copies)]
    t_embed = time.time() - t0
    head = train_head(np.concatenate(xs), np.tile(tr.labels, a.copies), len(labels), a.epochs, a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    torch.save({"head": head.state_dict(), "labels": labels, "copies": a.copies, "epochs": a.epochs,
                "seed": a.seed, "data": [str(d) for d in a.data]}, a.out / "head.pt")
    report = {"train_clips": len(tr), "embed_s": round(t_embed, 1), "total_s": None}
    for split in ("val", "test"):
        s = data.splits[split]
        report[f"synthetic_{split}"] = scores(probs(head, embed_split(emb, s.audio, None, f"embed {split}")), s.labels, unk)
    for name in ("fsdd", "gsc_subset"):
        if not (a.shared / name).is_dir():
            print(f"{a.shared / name}: not found, skipped")
            continue
        wave, y = real_set(a.shared / name, labels)
        ph = probs(head, batched(emb, wave))
        report[name] = {"head": scores(ph, y, unk)}
        for m, path in zip(models, a.bilstm):
            pm = batched(m.scores, wave)
            report[name][str(path)] = scores(pm, y, unk)
            report[name][f"{path} + head"] = scores((pm + ph) / 2, y, unk)
    report["total_s"] = round(time.time() - t0, 1)
    (a.out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"synthetic held-out: val {report['synthetic_val']['all']:.3f}, test {report['synthetic_test']['all']:.3f}")
    for name in ("fsdd", "gsc_subset"):
        for who, r in report.get(name, {}).items():
            print(f"{name:11s} {who:45s} words {r['words']:.3f}  all {r['all']:.3f}"
                  + (f"  non-keywords rejected {r['unknown_rejected']:.3f}" if "unknown_rejected" in r else ""))
    last = {"test": report["synthetic_test"]["all"]}
    for name in ("fsdd", "gsc_subset"):
        if name in report:
            last[f"{name}_head"] = report[name]["head"]["words"]
            for k, path in enumerate(a.bilstm):
                last[f"{name}_bilstm{k}"] = report[name][str(path)]["words"]
                last[f"{name}_bilstm{k}_plus_head"] = report[name][f"{path} + head"]["words"]
    last["minutes"] = report["total_s"] / 60
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()))


if __name__ == "__main__":
    main()
