#!/usr/bin/env python
"""Adapting a model to one person: fine-tune it (`kws train --init`) on the synthetic set plus the
first K recordings of each digit by one FSDD speaker, and evaluate on that speaker's other
recordings, against the model before fine-tuning on the same clips; for each speaker in turn.

    python scripts/fsdd_enroll.py runs/default [--takes 5] [--repeat 20] [--epochs 3] [--synth data/synth]

This is what a user does with a few recordings of their own voice in the folder-per-word layout.
FSDD is linked (not copied) into git-ignored folders data/fsdd_enroll<K>_<spk>/ (the K takes) and
data/fsdd_rest<K>_<spk>/ (the rest); runs go to runs/enroll<K>x<R>_<spk>/, trained and exported (model.onnx),
and are reused while newer than the base model. When the base run has an embedding head (head.pt), the
adapted run gets one too (`kws train ... --head`: trained on the same data, own clips repeated as
for the BiLSTM; runs/enroll<K>x<R>_<spk>_head/), and both models are evaluated as exported
(model.onnx, head and BiLSTM pooled); --no-head compares the BiLSTMs alone. Needs ../shared/data/fsdd.
Last line: name=value pairs (base_<spk>, adapted_<spk>, means).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scripts.fsdd_holdout import link_tree  # noqa: E402
from scripts.real_speakers import target_accuracy  # noqa: E402


def take_of(f: Path) -> int:
    """FSDD names are <speaker>_<take>.wav."""
    return int(f.stem.rsplit("_", 1)[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", type=Path, help="run folder of the model to adapt (e.g. runs/default)")
    ap.add_argument("--fsdd", type=Path, default=REPO.parent / "shared" / "data" / "fsdd",
                    help="FSDD folder-per-digit (default ../shared/data/fsdd)")
    ap.add_argument("--synth", type=Path, default=REPO / "data" / "synth",
                    help="the synthetic set trained alongside (default data/synth)")
    ap.add_argument("--takes", type=int, default=5, help="recordings per digit used for adapting (default 5)")
    ap.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (default 3)")
    ap.add_argument("--repeat", type=int, default=20, help="uses of each own recording per epoch (default 20)")
    ap.add_argument("--speakers", default="jackson,nicolas,theo,yweweler", help="comma-separated FSDD speakers")
    ap.add_argument("--no-head", action="store_true", help="the BiLSTM alone, before and after, even when the base "
                    "run has an embedding head (by default its head.pt makes both models the exported ones: the "
                    "base's model.onnx, and the adapted run trained with --head, its head on the same data)")
    a = ap.parse_args()
    head = (a.base / "head.pt").is_file() and not a.no_head
    if not a.fsdd.is_dir():
        sys.exit(f"{a.fsdd}: not found (FSDD is in ../shared/data, outside the project)")
    from pipeline.evaluate import evaluate
    res: dict[str, float] = {}
    for spk in a.speakers.split(","):
        enroll = REPO / "data" / f"fsdd_enroll{a.takes}_{spk}"
        rest = REPO / "data" / f"fsdd_rest{a.takes}_{spk}"
        link_tree(a.fsdd, enroll, lambda f: f.name.startswith(spk + "_") and take_of(f) < a.takes)
        link_tree(a.fsdd, rest, lambda f: f.name.startswith(spk + "_") and take_of(f) >= a.takes)
        run = REPO / "runs" / (f"enroll{a.takes}x{a.repeat}_{spk}" + ("_head" if head else ""))
        base_pt = a.base / "best.pt" if a.base.is_dir() else a.base
        done = run / "model.onnx"          # reused only if made after the base model's checkpoint
        if not (done.is_file() and done.stat().st_mtime > base_pt.stat().st_mtime):
            subprocess.run([sys.executable, "-m", "pipeline.cli", "train", "--data", str(a.synth), str(enroll),
                            "--out", str(run), "--init", str(a.base), "--epochs", str(a.epochs),
                            "--repeat", "1", str(a.repeat)] + (["--head"] if head else []),
                           cwd=REPO, check=True)
            subprocess.run([sys.executable, "-m", "pipeline.cli", "export", str(run)] + ([] if head else ["--no-head"]),
                           cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        quiet = dict(jobs=2, log=lambda *x: None)
        base = a.base / "model.onnx" if head else a.base
        res[f"base_{spk}"], n = target_accuracy(evaluate(base, [rest], "all", **quiet))
        res[f"adapted_{spk}"], _ = target_accuracy(evaluate(run / "model.onnx" if head else run, [rest], "all", **quiet))
        print(f"{spk}: {res[f'base_{spk}']:.4f} before, {res[f'adapted_{spk}']:.4f} after adapting to "
              f"{a.takes} takes per digit ({n} other clips)", flush=True)
    for k in ("base", "adapted"):
        vals = [v for name, v in res.items() if name.startswith(k + "_")]
        res[f"{k}_mean"] = sum(vals) / len(vals)
    print(" ".join(f"{k}={v:.4f}" for k, v in res.items()))


if __name__ == "__main__":
    main()
