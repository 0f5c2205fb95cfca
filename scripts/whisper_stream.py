#!/usr/bin/env python
"""Whisper tiny.en as a second stage in the stream: does it remove false accepts at lower thresholds?

    python scripts/whisper_stream.py runs/default/model.onnx --data data/synth --minutes 60

Streams the test split as `kws stream-eval` does (same stream for the same --minutes and --seed;
its window scores are kept in --out and reused), then replays the detector at each of --thresholds
(one threshold for every word) and, for every candidate it fires, scores the last --span seconds
of audio with model.whisper.onnx (`kws export RUN --whisper`; one thread) and pools the two as
`kws evaluate` does; the candidate stands only when the pooled best label is its word. Prints per
threshold the hit rate and false accepts per hour of the model alone and with Whisper, the
median latency from the word's end without Whisper's time, and the median cost of one check.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import REFRACTORY_MS  # noqa: E402
from pipeline.datasets.noise import noise_bank_or_synthetic  # noqa: E402
from pipeline.datasets.speech_commands import noise_files, scan  # noqa: E402
from pipeline.errors import KwsError  # noqa: E402
from pipeline.stream import Detector  # noqa: E402
from pipeline.stream_eval import build_stream, match, replay, smoothed, stream_eval  # noqa: E402
from pipeline.verifier import WhisperVerifier, whisper_path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="model.onnx with model.whisper.onnx beside it")
    ap.add_argument("--data", type=Path, required=True, help="dataset folder whose test split makes the stream")
    ap.add_argument("--minutes", type=float, default=60.0, help="stream length (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="stream layout seed (default 0)")
    ap.add_argument("--span", type=float, default=1.5, help="seconds of audio Whisper scores, ending where the "
                    "candidate fired (default 1.5)")
    ap.add_argument("--thresholds", default="0.3,0.4,0.5,0.6,0.7,0.8", help="comma-separated global thresholds")
    ap.add_argument("--whisper", type=Path, default=None, help="the Whisper graph (default: model.whisper.onnx beside "
                    "the model)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the stream-eval report and window scores "
                    "(default: next to the model, whisper-stream-<data>-<minutes>)")
    a = ap.parse_args()
    out = a.out or a.model.parent / f"whisper-stream-{a.data.name}-{a.minutes:g}"
    try:
        v = WhisperVerifier(a.whisper or whisper_path(a.model), threads=1)
        if not (out / "scores.npz").is_file():
            stream_eval(a.model, a.data, minutes=a.minutes, seed=a.seed, out_dir=out)
        d = np.load(out / "scores.npz")
        times, probs, labels = d["times"], d["probs"], list(d["labels"])
        rep = json.loads((out / "report.json").read_text())
        v.check_labels(labels, a.model)
        clips = scan(a.data)
    except KwsError as e:
        sys.exit(f"error: {e}")
    sr = 16000
    chosen = [c for c in clips if c.split == "test"] or clips
    bank = noise_bank_or_synthetic(list(noise_files(a.data)), sr, a.seed)
    audio, events = build_stream([(str(c.path), c.word) for c in chosen], labels, bank, sr, a.minutes, a.seed)
    sm = smoothed(probs, rep["smooth"])
    index = {float(t): i for i, t in enumerate(times)}
    n_kw, hours = sum(e.keyword for e in events), rep["hours"]
    checked: dict[int, tuple[str, float]] = {}
    for th in (float(x) for x in a.thresholds.split(",")):
        det = Detector(labels, {}, default=th, smooth=rep["smooth"], refractory_s=REFRACTORY_MS / 1000)
        cands = replay(times, probs, det)
        for t, _ in tqdm([c for c in cands if index[c[0]] not in checked], desc=f"whisper at {th:g}", leave=False):
            i, end = index[t], int(round(t * sr))
            t0 = time.perf_counter()
            p = v.pooled(sm[i:i + 1], v.log_likelihoods([audio[max(0, end - int(a.span * sr)):end]]))[0]
            checked[i] = (labels[int(p.argmax())], time.perf_counter() - t0)
        kept = [(t, lab) for t, lab in cands if checked[index[t]][0] == lab]
        h0, fa0, *_ = match(cands, events)
        h, fa, lat, *_ = match(kept, events)
        cost = np.median([checked[index[t]][1] for t, _ in cands]) * 1000 if cands else float("nan")
        print(f"threshold {th:.2f}: model alone {h0 / n_kw:.4f} of {n_kw} keywords at {fa0 / hours:.2f} FA/h; "
              f"with Whisper {h / n_kw:.4f} at {fa / hours:.2f} FA/h ({fa}); latency median "
              f"{np.median(lat) * 1000 if lat else float('nan'):.0f} ms + {cost:.0f} ms per check; {len(cands)} candidates")


if __name__ == "__main__":
    main()
