#!/usr/bin/env python
"""Leave-one-speaker-out on FSDD: train on the synthetic set plus FSDD without one speaker,
evaluate on that speaker; for each of the four speakers in turn.

    python scripts/fsdd_holdout.py [--synth data/synth] [--epochs 20] [--speakers jackson,theo]
    python scripts/fsdd_holdout.py --init runs/default --epochs 5     # fine-tune the default model
    python scripts/fsdd_holdout.py --epochs 40 --repeat-real 3        # real clips 3 times per epoch
    python scripts/fsdd_holdout.py --epochs 40 --train-args "--hidden 96 --mfcc-tower 96" --tag tw96
    python scripts/fsdd_holdout.py --epochs 40 --head                 # + the embedding head, as `kws demo`
    python scripts/fsdd_holdout.py --bilstm runs/default              # that run's BiLSTM (synthetic voices
                                                                      # only), a head trained with the 3 speakers
    python scripts/fsdd_holdout.py --bilstm runs/default --word       # the same with the word head too

FSDD is linked (not copied) into git-ignored folders under data/: data/fsdd_minus_<spk>/ and
data/fsdd_only_<spk>/. Runs go to runs/fsdd_minus_<spk>/ (with --init: runs/ft_fsdd_minus_<spk>/; _x<N> with
--repeat-real N; _<TAG> with --tag TAG; _head with --head; runs/head_fsdd_minus_<spk>_<RUN name> with
--bilstm RUN). A run that was stopped part-way is continued with `kws train --resume`; a finished one
is only evaluated again. With --head (and --bilstm) the head is trained on the same data as the
BiLSTM (`kws train-head RUN --data SYNTH FSDD-minus-speaker`), the run exported with it (`kws
export RUN`), and the exported model.onnx, the head pooled with the BiLSTM, is what is evaluated.
Last line: name=value pairs.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scripts.real_speakers import target_accuracy  # noqa: E402


def link_tree(src: Path, dst: Path, keep) -> None:
    for f in sorted(src.glob("*/*.wav")):
        if keep(f):
            t = dst / f.parent.name / f.name
            t.parent.mkdir(parents=True, exist_ok=True)
            if not t.exists():
                t.symlink_to(f.resolve())


def trained_epochs(run: Path) -> tuple[int | None, int]:
    """(epochs done, epochs asked) of ``run``'s last.pt; (None, 0) when there is none."""
    if not (run / "last.pt").is_file():
        return None, 0
    from pipeline.checkpoint import load_checkpoint
    ck = load_checkpoint(run / "last.pt")
    return ck["epoch"], ck["run_config"].train.epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fsdd", type=Path, default=REPO.parent / "shared" / "data" / "fsdd")
    ap.add_argument("--synth", type=Path, default=REPO / "data" / "synth")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--speakers", default="jackson,nicolas,theo,yweweler")
    ap.add_argument("--init", type=Path, default=None, help="fine-tune this run instead of training from scratch")
    ap.add_argument("--repeat-real", type=int, default=1,
                    help="uses of the real speakers' clips per epoch (kws train --repeat 1 N; default 1)")
    ap.add_argument("--train-args", default="", help="more kws train flags, one string, e.g. "
                    "\"--hidden 96 --mfcc-tower 96\" (needs --tag, so the runs do not reuse the default's)")
    ap.add_argument("--tag", default="", help="suffix of the run folders, runs/fsdd_minus_<spk>_<TAG>")
    ap.add_argument("--head", action="store_true", help="also train the embedding head on the same data, export, "
                    "and evaluate the exported model (the head pooled with the BiLSTM)")
    ap.add_argument("--bilstm", type=Path, default=None, help="no BiLSTM training: this run's best.pt, with a head "
                    "trained on the synthetic set plus the other speakers (implies --head)")
    ap.add_argument("--word", action="store_true", help="with --head or --bilstm: the word head too (`kws "
                    "train-head --word`); run folders get _word")
    a = ap.parse_args()
    if a.word and not (a.head or a.bilstm):
        ap.error("--word needs --head or --bilstm")
    if a.train_args and not a.tag:
        ap.error("--train-args needs --tag: without it the runs would be named, and reused, as the default's")
    from pipeline.evaluate import evaluate
    res = {}
    for spk in a.speakers.split(","):
        minus, only = REPO / "data" / f"fsdd_minus_{spk}", REPO / "data" / f"fsdd_only_{spk}"
        link_tree(a.fsdd, minus, lambda f: not f.name.startswith(spk + "_"))
        link_tree(a.fsdd, only, lambda f: f.name.startswith(spk + "_"))
        run = REPO / "runs" / ((f"ft_fsdd_minus_{spk}" if a.init else f"fsdd_minus_{spk}")
                               + (f"_x{a.repeat_real}" if a.repeat_real > 1 else "") + (f"_{a.tag}" if a.tag else "")
                               + ("_head" if a.head else "") + ("_word" if a.word and a.head else ""))
        if a.bilstm:
            run = REPO / "runs" / (f"head_fsdd_minus_{spk}_{a.bilstm.resolve().name}" + ("_word" if a.word else ""))
            run.mkdir(parents=True, exist_ok=True)
            if not (run / "best.pt").is_file():
                shutil.copy(a.bilstm / "best.pt", run / "best.pt")
        done, total = trained_epochs(run)
        if not a.bilstm and (done is None or done < total):   # a new run, or a stopped one: --resume continues it
            subprocess.run([sys.executable, "-m", "pipeline.cli", "train", "--data", str(a.synth), str(minus),
                            "--out", str(run), "--epochs", str(a.epochs), "--repeat", "1", str(a.repeat_real)]
                           + (["--init", str(a.init)] if a.init else []) + shlex.split(a.train_args)
                           + (["--resume"] if done is not None else []), cwd=REPO, check=True)
        model = run
        if a.head or a.bilstm:
            if not (run / "head.pt").is_file():
                subprocess.run([sys.executable, "-m", "pipeline.cli", "train-head", str(run), "--data", str(a.synth),
                                str(minus), "--repeat", "1", str(a.repeat_real)] + (["--word"] if a.word else []),
                               cwd=REPO, check=True)
            model = run / "model.onnx"
            if not model.is_file() or model.stat().st_mtime < (run / "head.pt").stat().st_mtime:
                subprocess.run([sys.executable, "-m", "pipeline.cli", "export", str(run)], cwd=REPO, check=True,
                               stdout=subprocess.DEVNULL)
        rep = evaluate(model, [only], "all", jobs=2, log=lambda *x: None)
        res[spk], n = target_accuracy(rep)
        print(f"held-out speaker {spk}: accuracy {res[spk]:.4f} on {n} clips", flush=True)
    mean = sum(res.values()) / len(res)
    print(" ".join(f"{k}={v:.4f}" for k, v in res.items()) + f" mean={mean:.4f}")


if __name__ == "__main__":
    main()
