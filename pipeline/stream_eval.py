"""Keyword spotting measured in a stream, not per clip (`kws stream-eval`).

A long stream is built from a dataset's test split (or `--split val|all`): keyword clips and non-keyword words at known
times, 2-3.5 s apart, each brought to -22 +- 6 dBFS, over continuous background noise at -50 to
-30 dBFS (SNR about 2-34 dB, whatever level the dataset was recorded at). It is pushed through
exactly the code of `kws stream` (StreamingScorer + Detector, one onnxruntime thread), and each
detection is matched to the keyword it belongs to:

* hit: a detection of word W between the start of a W utterance and 1.2 s after its end;
* false accept: any other detection (a wrong word, a non-keyword, noise);
* latency: detection time minus the word's end (found from the clip's energy);
* real-time factor: processing seconds per second of audio, on one thread (``real_time_factor``,
  the whole stream's; ``real_time_factor_median_hop``, the median hop's, which a shared machine's
  slow spells move less).

Each false accept is also traced to the clip it fired on (``false_accept_sources`` in the report:
word folder/file, the label that fired, how often, of how many placements of that clip), since a
stream repeats its clips and a few confusable ones ("start" heard as "stop") can make most of them.

A DET curve (false accepts per hour against miss rate, over a sweep of one global threshold) is
written as PNG by replaying the detector on the stored window scores.
"""
from __future__ import annotations

import json
import resource
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from .audio import load_clip, speech_bounds
from .datasets.noise import noise_bank_or_synthetic
from .datasets.speech_commands import label_of, noise_files, scan
from .errors import DatasetError
from .config import REFRACTORY_MS, SMOOTH_WINDOWS
from .stream import Detector, StreamingScorer


@dataclass
class Event:
    label: str
    start: float
    end: float
    keyword: bool
    source: str = ""        # the clip placed there, as word/file.wav


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc; ru_maxrss elsewhere)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_stream(paths_labels: list[tuple[str, str]], labels: list[str], bank: list[np.ndarray], sr: int,
                 minutes: float, seed: int) -> tuple[np.ndarray, list[Event]]:
    """-> (audio (samples,) float32, events). Keywords 75% of placements, other words 25%."""
    rng = np.random.default_rng(seed)
    kw = [p for p, l in paths_labels if l in labels and not l.startswith("_")]
    kw_set = set(kw)
    other = [p for p, l in paths_labels if p not in kw_set]
    if not kw:
        raise DatasetError("no keyword clips of this model's words in the data")
    lab = dict(paths_labels)
    cache: dict[str, tuple[np.ndarray, float, float]] = {}

    def clip(p: str):
        if p not in cache:
            x = load_clip(p, sr, sr, floor_dbfs=None)      # mixed into the noise bed: pad with nothing
            start, end = speech_bounds(x, sr, top_db=30)
            cache[p] = (x, start / sr, end / sr)
        return cache[p]

    n = int(minutes * 60 * sr)
    noise = np.zeros(n, np.float32)
    block = 10 * sr
    for s in range(0, n, block):
        src = bank[rng.integers(len(bank))]
        seg = np.resize(src[rng.integers(0, max(1, len(src) - block)):], min(block, n - s))
        noise[s:s + len(seg)] = seg * 10 ** (rng.uniform(-50, -30) / 20)
    audio = noise
    events, pos = [], 1.0
    while pos + 1.5 < n / sr:
        use_kw = not other or rng.random() < 0.75
        p = kw[rng.integers(len(kw))] if use_kw else other[rng.integers(len(other))]
        x, ws, we = clip(p)
        # speech at -22 dBFS +- 6 dB over a -50..-30 dBFS noise bed: SNR about 2-34 dB,
        # whatever level the dataset was recorded at
        rms = float(np.sqrt(np.mean(x[int(ws * sr):int(we * sr)] ** 2))) + 1e-9
        gain = 10 ** ((rng.uniform(-28, -16)) / 20) / rms
        i = int(pos * sr)
        audio[i:i + len(x)] += x * gain
        events.append(Event(label_of(lab[p], tuple(labels)), pos + ws, pos + we, use_kw, "/".join(Path(p).parts[-2:])))
        pos += rng.uniform(2.0, 3.5)
    return np.clip(audio, -1, 1, out=audio), events          # in place: a 6-hour stream is 1.4 GB


FA_KINDS = ("wrong_word", "repeat", "non_keyword", "noise")


class Matched(NamedTuple):
    hits: int
    false_accepts: int
    latencies: list[float]          # of the hits, seconds from the word's end
    kinds: dict[str, int]           # false accepts by kind (FA_KINDS)
    sources: Counter                # (label that fired, Event.source or "" for noise) -> false accepts


def match(dets: list[tuple[float, str]], events: list[Event], after_s: float = 1.2) -> Matched:
    """Detections (time, label) against the stream's events.

    Kinds: ``wrong_word`` (during a keyword, another word), ``repeat`` (a second detection of an
    already detected keyword), ``non_keyword`` (during a non-keyword word), ``noise`` (no word)."""
    used = set()
    hits, fa, lat = 0, 0, []
    kinds = dict.fromkeys(FA_KINDS, 0)
    sources: Counter = Counter()
    kws = [(k, e) for k, e in enumerate(events) if e.keyword]
    starts = np.array([e.start for _, e in kws])
    all_starts = np.array([e.start for e in events])
    for t, label in dets:
        j = int(np.searchsorted(starts, t, side="right"))
        cand = [kws[i] for i in range(max(0, j - 2), j)]
        ok = [(k, e) for k, e in cand if e.label == label and k not in used and e.start <= t <= e.end + after_s]
        if ok:
            k, e = ok[-1]
            used.add(k)
            hits += 1
            lat.append(t - e.end)
            continue
        fa += 1
        j = int(np.searchsorted(all_starts, t, side="right"))
        near = [e for e in events[max(0, j - 2):j] if e.start - 0.2 <= t <= e.end + after_s]
        e = near[-1] if near else None                # the word it fired on, if any
        sources[(label, e.source if e else "")] += 1
        if e is None:
            kinds["noise"] += 1
        elif not e.keyword:
            kinds["non_keyword"] += 1
        elif e.label == label:
            kinds["repeat"] += 1
        else:
            kinds["wrong_word"] += 1
    return Matched(hits, fa, lat, kinds, sources)


def smoothed(probs: np.ndarray, k: int) -> np.ndarray:
    """(windows, classes) -> each window's mean with the k - 1 before it (fewer at the start), as
    Detector.smoothed averages its history."""
    c = np.cumsum(np.vstack([np.zeros((1, probs.shape[1])), probs]), axis=0)
    n = np.minimum(np.arange(1, len(probs) + 1), k)
    return (c[1:] - c[np.arange(1, len(probs) + 1) - n]) / n[:, None]


def replay(times: np.ndarray, probs: np.ndarray, det: Detector) -> list[tuple[float, str]]:
    """Detections of ``det`` over stored window scores (same logic as Detector.update, vectorised)."""
    sm = smoothed(probs, det.smooth)
    best = sm.argmax(1)
    score = sm[np.arange(len(sm)), best]
    cand = np.flatnonzero(det.active[best] & (score >= det.thr[best]))
    out, last = [], -1e9
    for i in cand:
        if times[i] - last >= det.refractory:
            last = times[i]
            out.append((float(times[i]), det.labels[best[i]]))
    return out


SWEEP_THRESHOLDS = np.round(np.concatenate([np.arange(0.3, 0.875, 0.05), np.arange(0.9, 0.995, 0.01)]), 3)


def sweep_thresholds(times: np.ndarray, probs: np.ndarray, labels: list[str], events: list[Event], hours: float,
                     thresholds, smooth: int = SMOOTH_WINDOWS, refractory_ms: int = REFRACTORY_MS) -> list[dict]:
    """One global threshold for every word, each of ``thresholds`` replayed over stored window scores
    ``probs`` (windows, classes) at ``times`` (windows,) -> [{threshold, miss_rate, false_accepts_per_hour}]."""
    n_kw = sum(e.keyword for e in events)
    out = []
    for th in thresholds:
        det = Detector(labels, {}, default=float(th), smooth=smooth, refractory_s=refractory_ms / 1000)
        hits, fa, *_ = match(replay(times, probs, det), events)
        out.append({"threshold": float(th), "miss_rate": 1 - hits / n_kw, "false_accepts_per_hour": fa / hours})
    return out


def stream_eval(model: Path, data: Path, minutes: float = 10.0, json_path: Path | None = None,
                out_dir: Path | None = None, hop_ms: int = 100, threshold: float | None = None, smooth: int | None = None,
                refractory_ms: int = REFRACTORY_MS, seed: int = 0, noise_dirs=(), split: str = "test", log=print,
                sweep_grid=SWEEP_THRESHOLDS) -> dict:
    scorer = StreamingScorer(model, hop_ms=hop_ms, threads=1)
    if scorer.note:
        log(scorer.note)
    labels = scorer.labels
    sr = scorer.sample_rate
    clips = scan(data)
    chosen = clips if split == "all" else [c for c in clips if c.split == split]
    if not chosen and split != "test":
        raise DatasetError(f"--data {data}: no clips in its {split} split")
    chosen = chosen or clips                     # a dataset without a test split: all its clips
    files = [f for r in [data] for f in noise_files(r)]
    for d in noise_dirs:
        files += sorted(Path(d).glob("*.wav"))
    bank = noise_bank_or_synthetic(files, sr, seed)
    log(f"building a {minutes:g}-minute stream from {len(chosen)} {split} clips of {data} ...")
    audio, events = build_stream([(str(c.path), c.word) for c in chosen], labels, bank, sr, minutes, seed)

    from .stream_cli import make_detector
    det = make_detector(scorer, threshold, smooth, refractory_ms)
    smooth = det.smooth                          # as resolved: the argument, the model's calibrated one, or SMOOTH_WINDOWS
    step = scorer.hop_samples
    # the window scores kept for the DET replay go into arrays filled (so resident) up front: the
    # RSS growth measured below is then the streaming path's own, not this bookkeeping's
    hops = -(-len(audio) // step) + 1
    times, probs, n_win = np.full(hops, np.nan), np.full((hops, len(labels)), np.nan, np.float32), 0
    hop_busy = np.zeros(hops)                    # seconds of work per hop: the median resists a noisy machine
    dets = []
    rss0 = rss_mb()
    rss_warm = None
    busy = 0.0
    for k, i in enumerate(tqdm(range(0, len(audio), step), desc="stream", unit="hop", leave=False)):
        t = time.perf_counter()
        for t_end, p in scorer.push(audio[i:i + step]):
            d = det.update(t_end, p)
            if d:
                dets.append((d.time, d.label))
            times[n_win], probs[n_win] = t_end, p
            n_win += 1
        hop_busy[k] = time.perf_counter() - t
        busy += hop_busy[k]
        if rss_warm is None and i >= len(audio) // 10:
            rss_warm = rss_mb()
    rss_end = rss_mb()
    seconds = len(audio) / sr
    hours = seconds / 3600
    hits, fa, lat, fa_kinds, fa_sources = match(dets, events)
    plays = Counter(e.source for e in events)
    n_kw = sum(e.keyword for e in events)
    times_a, probs_a = times[:n_win], probs[:n_win]
    sweep = sweep_thresholds(times_a, probs_a, labels, events, hours, sweep_grid, smooth, refractory_ms)
    report = {
        "hit_rate": hits / n_kw, "false_accepts_per_hour": fa / hours, "false_accepts": fa,
        "false_accepts_by_kind": fa_kinds,
        "false_accept_sources": [{"fired": lab, "clip": src or "(noise)", "count": c, "placed": plays[src] if src else None}
                                 for (lab, src), c in fa_sources.most_common(20)],
        "keywords": n_kw, "non_keywords": len(events) - n_kw, "hours": hours,
        "latency_ms_median": float(np.median(lat) * 1000) if lat else None,
        "latency_ms_p90": float(np.percentile(lat, 90) * 1000) if lat else None,
        "real_time_factor": busy / seconds,
        "real_time_factor_median_hop": float(np.median(hop_busy[hop_busy > 0])) / (step / sr) if n_win else None,
        "rss_mb_start": rss0, "rss_mb_growth": rss_end - (rss_warm or rss0),
        "dropped_samples": 0, "hop_ms": hop_ms, "smooth": smooth, "windows": n_win,
        "thresholds": "global %.2f" % threshold if threshold else "per-word from the model",
        "model": str(model), "data": str(data), "split": split, "sweep": sweep,
    }
    default_dir = f"stream-eval-{Path(data).name}" + ("" if split == "test" else f"-{split}")
    out_dir = Path(out_dir) if out_dir else Path(model).parent / default_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    from .plots import plot_det
    plot_det([s["false_accepts_per_hour"] for s in sweep], [s["miss_rate"] for s in sweep], out_dir / "det.png",
             f"{Path(data).name}: {minutes:g} min, hop {hop_ms} ms")
    np.savez_compressed(out_dir / "scores.npz", times=times_a, probs=probs_a, labels=np.array(labels),
                        events=np.array([(e.start, e.end, e.keyword) for e in events], np.float64),
                        event_labels=np.array([e.label for e in events]))
    text = json.dumps(report, indent=1)
    (out_dir / "report.json").write_text(text)
    if json_path:
        Path(json_path).write_text(text)
    log(f"hit rate {report['hit_rate']:.3f} ({hits}/{n_kw}); false accepts {fa} = {report['false_accepts_per_hour']:.2f}/hour; "
        f"latency median {report['latency_ms_median'] or float('nan'):.0f} ms, p90 {report['latency_ms_p90'] or float('nan'):.0f} ms; "
        f"real-time factor {report['real_time_factor']:.4f} (median hop {report['real_time_factor_median_hop'] or float('nan'):.4f}); "
        f"RSS growth {report['rss_mb_growth']:.1f} MB")
    log("false accepts by kind: " + ", ".join(f"{k} {v}" for k, v in fa_kinds.items()))
    if fa_sources:
        log("most false accepts on: " + "; ".join(
            f'"{lab}" on {src} ({c} of its {plays[src]} placements)' if src else f'"{lab}" on noise ({c})'
            for (lab, src), c in fa_sources.most_common(5)))
    log(f"wrote {out_dir / 'det.png'}, {out_dir / 'report.json'} and the window scores {out_dir / 'scores.npz'}")
    return report
