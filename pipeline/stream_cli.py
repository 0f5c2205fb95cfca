"""`kws stream`, `kws devices`, `kws record`, `kws stream-eval`, `kws calibrate`: the device-side commands
(torch is never imported)."""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .errors import StreamError
from .config import CALIBRATE_MINUTES, REFRACTORY_MS, SMOOTH_WINDOWS


def model_smoothing(scorer, smooth: int | None) -> int:
    """``--smooth`` when given, else the smoothing the model's threshold was calibrated for (``kws
    calibrate`` stores it with the threshold), else SMOOTH_WINDOWS."""
    if smooth is not None:
        return smooth
    c = scorer.model.calibration
    return int(c.get("smooth", SMOOTH_WINDOWS)) if c else SMOOTH_WINDOWS


def make_detector(scorer, threshold: float | None, smooth: int | None, refractory_ms: int):
    from .stream import Detector
    th = {} if threshold is not None else scorer.model.thresholds
    return Detector(scorer.labels, th, default=threshold if threshold is not None else 0.8,
                    smooth=model_smoothing(scorer, smooth), refractory_s=refractory_ms / 1000)


def describe_thresholds(scorer, threshold: float | None) -> str:
    """Where the detection thresholds come from, in a few words (printed when the stream starts)."""
    if threshold is not None:
        return f"threshold {threshold:g} for every word (--threshold)"
    c = scorer.model.calibration
    if c:
        return (f"threshold {c['threshold']:g} for every word (kws calibrate: <= {c['target_false_accepts_per_hour']:g} "
                f"false accepts per hour on a {c['minutes']:g}-minute {c['split']} stream of {Path(c['data']).name})")
    th = scorer.model.thresholds
    if th:
        lo, hi = min(th.values()), max(th.values())
        which = f"threshold {lo:g} for every word" if lo == hi else f"per-word thresholds {lo:g}-{hi:g}"
        return f"{which} (set at export from validation clips)"
    return "threshold 0.8 for every word (none stored in the model)"


def emit(det, as_json: bool, out=sys.stdout) -> None:
    if as_json:
        out.write(json.dumps({"time": det.time, "label": det.label, "score": round(det.score, 4)}) + "\n")
    else:
        out.write(f"{det.time:7.2f}s  {det.label}  {det.score:.2f}\n")
    out.flush()


def _live(level_db: float, label: str, score: float) -> None:
    bars = int(np.clip((level_db + 60) / 60 * 20, 0, 20))
    sys.stderr.write(f"\r  level {'#' * bars}{'.' * (20 - bars)} {level_db:6.1f} dB   best: {label:10s} {score:.2f} ")
    sys.stderr.flush()


def run_stream(a: argparse.Namespace) -> None:
    from .audio import read_audio
    from .stream import StreamingScorer, with_quiet_margins

    if bool(a.mic) == bool(a.wav):
        raise StreamError("give exactly one of --mic or --wav FILE")
    scorer = StreamingScorer(a.model, hop_ms=a.hop_ms, window_ms=a.window_ms)
    if scorer.note:
        print(scorer.note, file=sys.stderr)
    det = make_detector(scorer, a.threshold, a.smooth, a.refractory_ms)
    n_det, n_win, busy = 0, 0, 0.0
    live = sys.stderr.isatty() and not a.json

    offset = 0.0            # seconds of margin before a --wav file: detection times stay the file's

    def handle(chunk: np.ndarray) -> None:
        nonlocal n_det, n_win, busy
        t = time.perf_counter()
        for t_end, probs in scorer.push(chunk):
            n_win += 1
            d = det.update(t_end - offset, probs)
            if d:
                if live:
                    sys.stderr.write("\r" + " " * 70 + "\r")
                emit(d, a.json)
                n_det += 1
            elif live:
                p = det.smoothed()
                k = int(np.argmax(p))
                rms = float(np.sqrt(np.mean(chunk ** 2))) if len(chunk) else 0.0
                _live(20 * np.log10(rms + 1e-9), scorer.labels[k], float(p[k]))
        busy += time.perf_counter() - t

    t0 = time.perf_counter()
    if a.wav:
        x = read_audio(a.wav, scorer.sample_rate)
        streamed, offset = with_quiet_margins(x, scorer, a.margin_ms, det.smooth)
        for i in range(0, len(streamed), scorer.hop_samples):
            handle(streamed[i:i + scorer.hop_samples])
        audio_s = len(x) / scorer.sample_rate
        print(f"{n_det} detections in {audio_s:.1f} s of audio" + (f" (+ {offset:.1f} s of quiet margin before "
              f"and after)" if offset else "") + f"; {n_win} windows, real-time factor "
              f"{busy / (len(streamed) / scorer.sample_rate):.4f}; {describe_thresholds(scorer, a.threshold)}",
              file=sys.stderr)
        return

    from .mic import MicSource
    stop = threading.Event()
    errors: list[BaseException] = []
    with MicSource(a.device, scorer.sample_rate) as mic:
        print(f"listening on {mic.device['index']} '{mic.device['name']}' at {mic.rate} Hz "
              f"(model {scorer.sample_rate} Hz); {describe_thresholds(scorer, a.threshold)}; Ctrl-C to stop",
              file=sys.stderr)

        def infer() -> None:
            try:
                while not stop.is_set():
                    chunk = mic.read(0.1)
                    if len(chunk):
                        handle(chunk)
            except BaseException as e:          # reported by the main thread
                errors.append(e)
                stop.set()

        worker = threading.Thread(target=infer, name="kws-inference", daemon=True)
        worker.start()
        try:
            while not stop.is_set() and (a.seconds is None or time.perf_counter() - t0 < a.seconds):
                time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            worker.join(2.0)
        if live:
            sys.stderr.write("\n")
        elapsed = time.perf_counter() - t0
        print(f"stopped after {elapsed:.1f} s: {n_det} detections, {n_win} windows, "
              f"{mic.overflows} input overflows, {mic.dropped} samples dropped, "
              f"CPU per audio second {busy / max(elapsed, 1e-9):.4f}", file=sys.stderr)
    if errors:
        raise errors[0]


def run_devices(a: argparse.Namespace) -> None:
    from .mic import input_devices
    devs = input_devices()
    if not devs:
        print("no input devices found", file=sys.stderr)
    for d in devs:
        mark = "*" if d["default"] else " "
        print(f"{mark} {d['index']:3d}  {d['name']}  ({d['channels']} ch, {d['default_samplerate']:.0f} Hz)")


def run_stream_eval(a: argparse.Namespace) -> None:
    from .stream_eval import stream_eval
    stream_eval(a.model, a.data, minutes=a.minutes, json_path=a.json, out_dir=a.out, hop_ms=a.hop_ms,
                threshold=a.threshold, smooth=a.smooth, refractory_ms=a.refractory_ms, seed=a.seed,
                noise_dirs=a.noise_dir, split=a.split)


def run_calibrate(a: argparse.Namespace) -> None:
    from .calibrate import calibrate
    calibrate(a.model, a.data, target_fa=a.target_fa, minutes=a.minutes, split=a.split, seed=a.seed,
              out_dir=a.out, noise_dirs=a.noise_dir)


def check_speaker_arg(s: str) -> str:
    from .record import SPEAKER_RULE, speaker_ok
    if not speaker_ok(s):
        raise argparse.ArgumentTypeError(SPEAKER_RULE)
    return s


def add_stream_commands(add) -> None:
    from .cli_types import nonneg_float, nonneg_int, positive_float, positive_int, probability, word_list
    from .config import DEFAULT_WORDS
    from .record import run_record

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", type=Path, required=True, help="exported model.onnx (its .frontend and .frames "
                        "graphs must sit beside it, as `kws export` writes them; with the embedding head, its .embed_stem, "
                        ".embed_tail and .cached graphs let the stream embed each frame and window once)")
        sp.add_argument("--threshold", type=probability, default=None, help="detection threshold for every word "
                        "(default: per-word thresholds stored in the model at export)")
        sp.add_argument("--hop-ms", type=positive_int, default=100, help="re-score the window every N ms (multiple of 10; default 100)")
        sp.add_argument("--smooth", type=positive_int, default=None,
                        help=f"average the scores of the last N windows (default: what the model's threshold was "
                        f"calibrated for with `kws calibrate`, else {SMOOTH_WINDOWS})")
        sp.add_argument("--refractory-ms", type=positive_int, default=REFRACTORY_MS, help="after a detection, nothing "
                        f"fires for N ms, so a word sliding through successive windows fires once (default {REFRACTORY_MS})")

    s = add("stream", run_stream, "Recognise keywords live from a microphone, or from a wav file through the same path.")
    common(s)
    s.add_argument("--mic", action="store_true", help="listen to an input device")
    s.add_argument("--device", default=None, help="input device index or name substring (default: the system default; see `kws devices`)")
    s.add_argument("--wav", type=Path, default=None, help="stream this audio file instead of the microphone")
    s.add_argument("--margin-ms", type=nonneg_int, default=None, help="with --wav: quiet noise floor "
                   "(-70 dBFS) streamed before and after the file, as a microphone hears the room around a "
                   "word, so a word at the file's very start or end passes through the window as in a live "
                   "stream (alone, a 1-s clip fills no window); times stay the file's "
                   f"(default: the window plus the smoothing, {1000 + SMOOTH_WINDOWS * 100} ms at hop 100; 0: the file alone)")
    s.add_argument("--window-ms", type=positive_int, default=None, help="window scored each hop: the model's, the length of its training clips (default 1000)")
    s.add_argument("--json", action="store_true", help='one JSON line per detection: {"time", "label", "score"}')
    s.add_argument("--seconds", type=positive_float, default=None, help="stop listening after N seconds (default: until Ctrl-C)")

    add("devices", run_devices, "List audio input devices (index, name, channels, rate; * = default).")

    r = add("record", run_record, "Record takes of each word from a microphone into DIR/<word>/ (to adapt a model "
            "to your voice with `kws train --init`).")
    r.add_argument("--out", type=Path, default=Path("data/mine"), help="dataset folder to add to (default data/mine)")
    r.add_argument("--words", type=word_list, default=DEFAULT_WORDS, help="comma-separated words to record "
                   "(default: the 20 default words)")
    r.add_argument("--model", type=Path, default=None, help="record the words of this model.onnx instead of --words")
    r.add_argument("--takes", type=positive_int, default=5, help="recordings per word (default 5)")
    r.add_argument("--speaker", type=check_speaker_arg, default="me", help="name in the file names: "
                   "<word>/<speaker>_<word>_<n>.wav (letters, digits, '-'; default me)")
    r.add_argument("--device", default=None, help="input device index or name substring (default: the system default)")
    r.add_argument("--timeout", type=positive_float, default=8.0, help="give up when no speech is heard for this many "
                   "seconds after a prompt (default 8)")

    e = add("stream-eval", run_stream_eval, "Measure hit rate, false accepts/hour, latency and real-time factor on a "
            "long synthetic stream built from a dataset's test split (or --split).")
    common(e)
    e.add_argument("--data", type=Path, required=True, help="dataset folder (its test split is used unless --split; all clips if it has no test split)")
    e.add_argument("--split", choices=["test", "val", "all"], default="test", help="clips the stream is built from "
                   "(default test, or all clips where the data has no test split; val to choose settings such as "
                   "--threshold on other speakers than the test split's)")
    e.add_argument("--minutes", type=positive_float, default=10.0, help="stream length in minutes (default 10)")
    e.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    e.add_argument("--out", type=Path, default=None, help="folder for det.png, report.json and "
                   "scores.npz (default: stream-eval-DATA next to the model; stream-eval-DATA-SPLIT for --split val/all)")
    e.add_argument("--noise-dir", type=Path, action="append", default=[], help="background-noise recordings (repeatable; "
                   "default: the dataset's _background_noise_, else synthetic noise)")
    e.add_argument("--seed", type=int, default=0, help="random seed for the stream layout (default 0)")

    c = add("calibrate", run_calibrate, "Choose one detection threshold for every word on a validation stream, for a "
            "target rate of false accepts per hour, and write it into the model's graphs.")
    c.add_argument("--model", type=Path, required=True, help="exported model.onnx (or model.int8.onnx), with its "
                   ".frontend and .frames graphs beside it; the threshold is written into the model and its graphs "
                   "(for model.int8.onnx not into the float front-end it shares)")
    c.add_argument("--data", type=Path, required=True, help="dataset folder whose validation speakers the stream is "
                   "built from (not the speakers you will test on)")
    c.add_argument("--target-fa", type=nonneg_float, default=0.5, help="false accepts per hour allowed on that "
                   "stream (default 0.5); the threshold with the most hits at or under it is kept")
    c.add_argument("--minutes", type=positive_float, default=CALIBRATE_MINUTES,
                   help=f"stream length in minutes (default {CALIBRATE_MINUTES:g}, "
                   "about 13 min per classifier on one core, 2.8 GB for the audio: at 0.5 per hour up to 6 false "
                   "accepts; two 360-minute streams of the same speakers made 3 and 9 at one threshold; README, "
                   "Results)")
    c.add_argument("--split", choices=["val", "all"], default="val", help="clips the stream is built from "
                   "(default val; all for a dataset of other speakers than the one you test on)")
    c.add_argument("--seed", type=int, default=0, help="random seed for the stream layout (default 0)")
    c.add_argument("--out", type=Path, default=None, help="folder for the stream's det.png, report.json, "
                   "scores.npz and calibration.json (default: calibrate-DATA-SPLIT next to the model)")
    c.add_argument("--noise-dir", type=Path, action="append", default=[], help="background-noise recordings "
                   "(repeatable; default: the dataset's _background_noise_, else synthetic noise)")
