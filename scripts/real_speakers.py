#!/usr/bin/env python
"""How a model does on real people: FSDD (4 speakers, 10 digits, 8 kHz) and the Speech Commands
subset (17 speakers; the clips of the model's target words), from ../shared/data.

    python scripts/real_speakers.py runs/default/model.onnx [--shared ../shared/data]
    python scripts/real_speakers.py runs/default/model.onnx --stream [--threshold 0.5]

Per clip, the model is pooled with model.whisper.onnx when it lies beside it (`kws export RUN
--whisper`), as `kws evaluate` pools it; --no-whisper scores the model alone.

Prints one line per dataset and a last line of name=value pairs. Writes confusion.png and
report.json per dataset next to the model (eval-fsdd-all/, eval-gsc_subset-all/).

With --stream each clip goes through the path of `kws stream --model M --wav CLIP` instead (quiet
margins, every window scored, smoothing, the model's thresholds, refractory period), one clip
at a time: a keyword clip counts as right when its word is detected, wrong when only other
words are, missed when nothing fires; a clip of another word (_unknown_) counts when anything fires.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluate import evaluate  # noqa: E402


def target_accuracy(report: dict) -> tuple[float, int]:
    """Accuracy over clips whose true label is a target word (not _unknown_)."""
    cm = np.asarray(report["confusion"])
    idx = [i for i, l in enumerate(report["labels"]) if not l.startswith("_") and cm[i].sum()]
    n = int(cm[idx].sum())
    return (float(sum(cm[i, i] for i in idx)) / n if n else float("nan")), n


def stream_clips(model: Path, root: Path, threshold: float | None) -> dict:
    """Each clip of ``root``/<word>/*.wav streamed on its own, as `kws stream --wav` does."""
    from pipeline.audio import read_audio
    from pipeline.config import REFRACTORY_MS
    from pipeline.stream import StreamingScorer, with_quiet_margins
    from pipeline.stream_cli import make_detector
    scorer = StreamingScorer(model)
    known = {l for l in scorer.labels if not l.startswith("_")}
    n = {"right": 0, "wrong": 0, "missed": 0, "keywords": 0, "others": 0, "others_fired": 0}
    files = sorted(root.glob("*/*.wav"))
    for f in tqdm(files, desc=root.name, unit="clip", leave=False):
        scorer.reset()
        det = make_detector(scorer, threshold, None, REFRACTORY_MS)          # the model's own smoothing
        x, offset = with_quiet_margins(read_audio(f, scorer.sample_rate), scorer, smooth=det.smooth)
        fired = [d.label for t, p in scorer.push(x) if (d := det.update(t - offset, p))]
        word = f.parent.name
        if word in known:
            n["keywords"] += 1
            n["right" if word in fired else "wrong" if fired else "missed"] += 1
        else:
            n["others"] += 1
            n["others_fired"] += bool(fired)
    return n


def shared_datasets(shared: Path):
    """(name, folder) for FSDD and the Speech Commands subset under ``shared``; says which are missing."""
    for name in ("fsdd", "gsc_subset"):
        if (shared / name).is_dir():
            yield name, shared / name
        else:
            print(f"{shared / name}: not found, skipped")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="model.onnx (or a run folder)")
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--stream", action="store_true", help="each clip through the `kws stream --wav` path (above)")
    ap.add_argument("--no-whisper", action="store_true", help="leave out MODEL.whisper.onnx (`kws export "
                    "--whisper`), which is otherwise pooled with the model, as `kws evaluate` does")
    ap.add_argument("--threshold", type=float, default=None, help="with --stream: one threshold for all words "
                    "(default: the model's own)")
    a = ap.parse_args()
    out = {}
    for name, d in shared_datasets(a.shared):
        if a.stream:
            model = a.model / "model.onnx" if a.model.is_dir() else a.model
            n = stream_clips(model, d, a.threshold)
            k = max(n["keywords"], 1)
            out[name] = n["right"] / k
            print(f"{name:11s} streamed: {n['keywords']} keyword clips: right word {n['right'] / k:.4f}, only a wrong "
                  f"word {n['wrong'] / k:.4f}, nothing {n['missed'] / k:.4f}" + (f"; {n['others']} clips of other "
                  f"words: something fired on {n['others_fired'] / n['others']:.4f}" if n["others"] else ""))
            continue
        rep = evaluate(a.model, [d], "all", jobs=2, log=lambda *x: None, whisper=not a.no_whisper)
        if rep["whisper"] and not out:
            print(f"pooled with Whisper tiny.en: {rep['whisper']} (--no-whisper leaves it out)")
        acc, n = target_accuracy(rep)
        out[name] = acc
        worst = sorted(((l, v["recall"]) for l, v in rep["per_class"].items() if v["support"]), key=lambda x: x[1])[:3]
        print(f"{name:11s} accuracy on the model's words {acc:.4f} ({n} clips); all clips {rep['accuracy']:.4f}; "
              f"lowest recall {', '.join(f'{l} {r:.2f}' for l, r in worst)}")
    print(" ".join(f"{k}_{'stream_right' if a.stream else 'acc'}={v:.4f}" for k, v in out.items()))


if __name__ == "__main__":
    main()
