"""Accuracy, per-class precision/recall and a confusion matrix on a dataset folder (`kws evaluate`).

The model is an exported ``.onnx`` (scored with onnxruntime; torch is never imported) or a run
folder / ``.pt`` checkpoint (scored with PyTorch). Labels and front-end settings come from the
artifact. Words in the data the model does not know count as ``_unknown_``.
"""
from __future__ import annotations

import json
from multiprocessing import Pool
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from .audio import fit_to_window, load_clip, read_audio
from .datasets.speech_commands import Clip, DatasetError, label_of, scan


def _torch_scorer(path: Path) -> tuple[list[str], int, int, Callable[[np.ndarray], np.ndarray]]:
    import torch                                          # only for checkpoints, never for .onnx

    from .checkpoint import load_model
    from .model import WaveformClassifier

    cfg, clf = load_model(path)
    model = WaveformClassifier(cfg.features, clf, use_dft=False).eval()

    def score(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    return list(cfg.labels), cfg.features.sample_rate, cfg.features.clip_samples, score


def _onnx_scorer(path: Path) -> tuple[list[str], int, int, Callable[[np.ndarray], np.ndarray]]:
    from .runtime import OnnxModel

    m = OnnxModel(path, threads=0)
    f = m.config.features
    return m.labels, f.sample_rate, f.clip_samples, m.scores


def scorer(model: str | Path):
    p = Path(model)
    return _onnx_scorer(p) if p.suffix == ".onnx" else _torch_scorer(p)


def _load(args: tuple[str, int, int]) -> np.ndarray:
    return load_clip(*args)


def _load_both(args: tuple[str, int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(path, rate, samples, Whisper's rate, Whisper's samples) -> (the model's window, the file's
    first Whisper samples), the file read once when the two rates agree."""
    from .verifier import fit_start
    path, sr, n, w_sr, w_n = args
    x = read_audio(path, sr)
    return fit_to_window(x, n), fit_start(x if w_sr == sr else read_audio(path, w_sr), w_n)


def _read(fn, tasks: list, jobs: int, desc: str) -> list[np.ndarray]:
    if jobs > 1:
        with Pool(jobs) as pool:
            return list(tqdm(pool.imap(fn, tasks, chunksize=16), total=len(tasks), desc=desc, leave=False))
    return [fn(t) for t in tqdm(tasks, desc=desc, leave=False)]


def select(roots: list[Path], split: str) -> list[Clip]:
    clips = [c for r in roots for c in scan(r) if split == "all" or c.split == split]
    if not clips:
        raise DatasetError(f"{', '.join(map(str, roots))}: no clips in split '{split}' (try --split all)")
    return clips


def metrics(truth: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict:
    n = len(labels)
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (truth, pred), 1)
    per = {}
    for i, l in enumerate(labels):
        tp, support, predicted = cm[i, i], cm[i].sum(), cm[:, i].sum()
        if support or predicted:
            per[l] = {"precision": float(tp / predicted) if predicted else 0.0,
                      "recall": float(tp / support) if support else 0.0, "support": int(support)}
    return {"accuracy": float((truth == pred).mean()), "clips": int(len(truth)), "per_class": per,
            "confusion": cm.tolist(), "labels": labels}


def evaluate(model: str | Path, roots: list[Path], split: str = "test", out_dir: Path | None = None,
             json_path: Path | None = None, jobs: int = 1, log=print, whisper: bool = True) -> dict:
    """Score every clip of ``split`` in ``roots``; write confusion.png and report.json; return the report.
    With ``whisper`` and a model.whisper.onnx beside the model (`kws export --whisper`), the model's
    probabilities are pooled with Whisper tiny.en's scores of each clip (pipeline/verifier.py)."""
    from .verifier import load_verifier
    labels, sr, n, score = scorer(model)
    verifier = load_verifier(model, use=whisper)
    if verifier is not None:
        verifier.check_labels(labels, model)
        log(f"pooled with Whisper tiny.en: {verifier.path} (--no-whisper leaves it out)")
    clips = select(roots, split)
    if verifier is None:
        audio = _read(_load, [(str(c.path), sr, n) for c in clips], jobs, "read")
    else:
        both = _read(_load_both, [(str(c.path), sr, n, verifier.sample_rate, verifier.samples) for c in clips], jobs, "read")
        audio, starts = [b[0] for b in both], [b[1] for b in both]
    probs = np.concatenate([score(np.stack(audio[i:i + 256])) for i in range(0, len(audio), 256)])
    if verifier is not None:
        probs = verifier.pooled(probs, verifier.log_likelihoods(starts, progress=True))
    truth = np.array([labels.index(label_of(c.word, tuple(labels))) for c in clips])
    pred = probs.argmax(1)
    report = metrics(truth, pred, labels)
    report.update({"model": str(model), "data": [str(r) for r in roots], "split": split,
                   "whisper": str(verifier.path) if verifier is not None else None})
    report["errors"] = [{"file": str(c.path), "true": labels[t], "pred": labels[p], "score": float(probs[k, p])}
                        for k, (c, t, p) in enumerate(zip(clips, truth, pred)) if t != p][:200]
    mp = Path(model)
    tag = "" if mp.is_dir() or mp.stem in ("model", "best") else mp.stem.removeprefix("model.") + "-"   # int8-, last-
    tag += "whisper-" if verifier is not None else ""
    out_dir = Path(out_dir) if out_dir else (mp if mp.is_dir() else mp.parent) / f"eval-{tag}{Path(roots[0]).name}-{split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    from .plots import plot_confusion
    present = sorted({*truth.tolist(), *pred.tolist()})
    cm = np.asarray(report["confusion"])[np.ix_(present, present)]
    plot_confusion(cm, [labels[i] for i in present], out_dir / "confusion.png",
                   f"{Path(roots[0]).name} ({split}): accuracy {report['accuracy']:.1%} on {len(clips)} clips")
    text = json.dumps(report, indent=1)
    (out_dir / "report.json").write_text(text)
    if json_path:
        Path(json_path).write_text(text)
    worst = sorted(((l, v) for l, v in report["per_class"].items() if v["support"]), key=lambda kv: kv[1]["recall"])[:5]
    log(f"accuracy {report['accuracy']:.4f} on {len(clips)} clips ({', '.join(map(str, roots))}, split {split})")
    log("lowest recall: " + ", ".join(f"{l} {v['recall']:.2f}" for l, v in worst if v["support"]))
    log(f"wrote {out_dir / 'confusion.png'} and {out_dir / 'report.json'}")
    return report
