#!/usr/bin/env python
"""How a model does on real people: FSDD (4 speakers, 10 digits, 8 kHz) and the Speech Commands
subset (17 speakers; the clips of the model's target words), from ../shared/data.

    python scripts/real_speakers.py runs/default/model.onnx [--shared ../shared/data]

Prints one line per dataset and a last line of name=value pairs. Writes confusion.png and
report.json per dataset next to the model (eval-fsdd-all/, eval-gsc_subset-all/).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.evaluate import evaluate  # noqa: E402


def target_accuracy(report: dict) -> tuple[float, int]:
    """Accuracy over clips whose true label is a target word (not _unknown_)."""
    cm = np.asarray(report["confusion"])
    idx = [i for i, l in enumerate(report["labels"]) if not l.startswith("_") and cm[i].sum()]
    n = int(cm[idx].sum())
    return (float(sum(cm[i, i] for i in idx)) / n if n else float("nan")), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="model.onnx (or a run folder)")
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    a = ap.parse_args()
    out = {}
    for name in ("fsdd", "gsc_subset"):
        d = a.shared / name
        if not d.is_dir():
            print(f"{d}: not found, skipped")
            continue
        rep = evaluate(a.model, [d], "all", jobs=2, log=lambda *x: None)
        acc, n = target_accuracy(rep)
        out[name] = acc
        worst = sorted(((l, v["recall"]) for l, v in rep["per_class"].items() if v["support"]), key=lambda x: x[1])[:3]
        print(f"{name:11s} accuracy on the model's words {acc:.4f} ({n} clips); all clips {rep['accuracy']:.4f}; "
              f"lowest recall {', '.join(f'{l} {r:.2f}' for l, r in worst)}")
    print(" ".join(f"{k}_acc={v:.4f}" for k, v in out.items()))


if __name__ == "__main__":
    main()
