"""`kws`: argparse subcommands that only parse flags and call the functions that do the work.

User mistakes (a missing folder, a corrupt wav, a bad flag value, a checkpoint from another config)
print one line ``kws: error: ...`` on stderr and exit with code 2, without a traceback.
Heavy modules (torch) are imported inside the commands that need them, so the device-side
commands (predict/evaluate/stream on .onnx, devices, stream-eval) never import torch.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .cli_types import (conv_channels_arg, f_min_arg, fraction, frame_stack_arg, jobs_default, n_mfcc_arg, nonneg_float,
                        nonneg_int, positive_float, positive_int, word_list)
from .config import (DEFAULT_ENGINES, DEFAULT_WORDS, AugmentConfig, FeatureConfig, HeadConfig, ModelConfig, TrainConfig,
                     POOLINGS, apply_overrides)
from .errors import ConfigError, KwsError

DEFAULT_DATA = Path("data/synth")
DEFAULT_RUN = Path("runs/default")
# what follows the BiLSTM's training in `kws demo`, in epochs of it on the same machine: [export +
# evaluation, with the head too]. Measured on 2 cores without bf16: epochs of 24-28 s, head (3 windows)
# 1.9-3.5 min, export (TorchScript exporter) and evaluation under 0.5 min.
DEMO_AFTER_EPOCHS = (2.0, 8.0)


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


def _run_config(a: argparse.Namespace, labels: tuple[str, ...]):
    from dataclasses import replace
    from .config import RunConfig
    feats = FeatureConfig(n_mfcc=a.n_mfcc, f_min=a.f_min)
    conv = a.conv if a.conv is not None else (ModelConfig.conv_channels if feats.n_mfcc == feats.n_mels else 0)
    if conv and feats.n_mfcc != feats.n_mels:
        raise ConfigError(f"--conv needs --n-mfcc {feats.n_mels} (all mel bands: it runs on the inverted DCT), "
                          f"got --n-mfcc {feats.n_mfcc}")
    model = ModelConfig(n_mfcc=feats.n_mfcc, hidden=a.hidden, layers=a.layers, dropout=a.dropout,
                        frame_stack=a.frame_stack, conv_channels=conv, mfcc_tower=a.mfcc_tower,
                        n_classes=len(labels))
    aug = AugmentConfig(trim_prob=a.trim_prob)
    if a.free_position:
        aug = replace(aug, free_position=True, partial_word_prob=0.08)
    lr = a.lr if a.lr is not None else (1e-3 if a.init else 3e-3)
    train = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=lr, seed=a.seed, augment=aug,
                        ema_decay=a.ema_decay, data_repeats=tuple(a.repeat or ()),
                        teachers=tuple(str(t) for t in a.teacher or ()))
    cfg = RunConfig(labels=labels, features=feats, model=model, train=train)
    return apply_overrides(cfg, a.set or [], fixed=("features", "model") if a.init else ())


def _init_config(a: argparse.Namespace, init):
    """Fine-tuning: labels, features and model from the --init checkpoint, training from the flags."""
    from dataclasses import replace
    base = _run_config(a, init.labels)
    return replace(base, features=init.features, model=init.model)


def cmd_train(a: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from .checkpoint import load_checkpoint
    from .data import check_repeats, clip_repeats, prepare
    from .train import pick_device, train

    device = pick_device(a.device)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    rank = dist.get_rank() if distributed else 0
    # The config: from the checkpoint when resuming (flags that change the model are ignored); with
    # --init, labels, features and model from that checkpoint and training from the flags; else all
    # from the flags, with the labels the data defines.
    saved = load_checkpoint(a.out / "last.pt")["run_config"] if a.resume else None
    init = load_checkpoint(a.init) if a.init and not saved else None
    template = saved or (_init_config(a, init["run_config"]) if init else _run_config(a, ("a", "b")))
    fixed_labels = saved.labels if saved else (init["run_config"].labels if init else None)
    check_repeats(a.data, template.train.data_repeats)          # before any decoding
    if template.train.teachers and not saved:
        from .distill import check_teachers
        check_teachers(template, labels=False)
    if distributed and rank != 0:
        dist.barrier()                       # rank 0 decodes the caches first
    data = prepare(a.data, template.features, template.train, a.cache_dir, task=a.task,
                   words=list(a.words) if a.words else None, labels=fixed_labels, noise_dirs=a.noise_dir,
                   jobs=a.jobs, labels_from=str(a.out / "last.pt") if saved else f"--init {a.init}")
    if distributed and rank == 0:
        dist.barrier()
    cfg = saved or (template if init else _run_config(a, data.labels))
    if init and rank == 0:
        print(f"fine-tuning from {a.init} ({len(cfg.labels)} labels, lr {cfg.train.lr:g})")
    repeats = clip_repeats(data.splits["train"].files, a.data, cfg.train.data_repeats)
    result = train(cfg, data, a.out, device, resume=a.resume, precision=a.precision,
                   init_weights=init["model"] if init else None, repeats=repeats, minutes=a.minutes,
                   after_epochs=getattr(a, "after_epochs", 0.0))
    if rank == 0:
        print(f"best validation accuracy {result.best_val_acc:.4f}; test {result.test_acc:.4f}; "
              f"{result.seconds / 60:.1f} min; wrote {a.out}/best.pt, last.pt, metrics.jsonl, curves.png")
        if a.head:
            add_head(a.out, a.data, cfg.train.seed, a.cache_dir, a.jobs, prepared=data, repeats=cfg.train.data_repeats)
        elif a.init and (Path(a.init) / "head.pt").is_file() and not (a.out / "head.pt").is_file():
            print(f"note: {a.init} has an embedding head, {a.out} has none, so `kws export {a.out}` exports the "
                  f"BiLSTM alone, far less accurate on real voices: add --head to train one for it (with the same "
                  f"--data and --repeat), or run `kws train-head {a.out} --data ...`")
        elif (a.out / "head.pt").is_file():
            print(f"note: {a.out}/head.pt is from an earlier `kws train-head`; `kws export {a.out}` includes it "
                  f"(--no-head leaves it out; `kws train-head {a.out} --data ...` trains it again)")
    if distributed:
        dist.destroy_process_group()


def add_head(run: Path, data: list[Path], seed: int, cache_dir: Path, jobs: int, prepared=None,
             repeats: tuple[int, ...] = ()) -> None:
    """`kws train-head` for `kws demo` and `kws train --head`: a head that cannot be had (no package
    registry for the embedding's graphs) is one line, and the BiLSTM alone is exported as before."""
    from .errors import ModelError
    from .head_train import train_head
    print("training the embedding head (kws train-head; --no-head skips it)")
    try:
        train_head(run, data, HeadConfig(seed=seed), cache_dir, jobs=jobs, data=prepared, repeats=repeats)
    except ModelError as e:
        print(f"kws: no embedding head, the model is the BiLSTM alone: {e}", file=sys.stderr)


def cmd_train_head(a: argparse.Namespace) -> None:
    from .head_train import train_head
    cfg = HeadConfig(windows=a.windows, stride=a.stride, context=a.context, hidden=a.hidden, copies=a.copies,
                     epochs=a.epochs, seed=a.seed, pooling=a.pooling)
    train_head(a.run, a.data, cfg, a.cache_dir, jobs=a.jobs, repeats=tuple(a.repeat or ()))


def cmd_export(a: argparse.Namespace) -> None:
    from .export import export_run
    paths = export_run(a.run, a.out, int8=a.int8, head=not a.no_head)
    for k, p in paths.items():
        print(f"{k:12s} {p}")


def cmd_predict(a: argparse.Namespace) -> None:
    from .runtime import OnnxModel
    m = OnnxModel(a.model, threads=0)
    for f, (label, score) in zip(a.files, m.predict_files(a.files)):
        print(f"{f}\t{label}\t{score:.3f}")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from .evaluate import evaluate
    evaluate(a.model, a.data, a.split, out_dir=a.out, json_path=a.json, jobs=a.jobs)


def cmd_demo(a: argparse.Namespace) -> None:
    """The main job: synthesise -> train -> export -> evaluate, on the embedded default data."""
    import time
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
    train_args.after_epochs = DEMO_AFTER_EPOCHS[not a.no_head]
    cmd_train(train_args)
    from .evaluate import evaluate
    from .export import export_run
    if not a.no_head:
        add_head(run, [a.data], a.seed, a.cache_dir, a.jobs)
    paths = export_run(run, None, int8=True, head=not a.no_head)
    report = evaluate(paths["model"], [a.data], "test", jobs=a.jobs)
    print(f"\ndone in {(time.time() - t0) / 60:.1f} min (synthesis {t_synth / 60:.1f} min)")
    print(f"  dataset        {a.data}")
    print(f"  checkpoints    {run}/best.pt, {run}/last.pt  (curves: {run}/curves.png)")
    print(f"  ONNX model     {paths['model']}  (+ .frames/.frontend graphs for streaming, .int8)")
    if not a.no_head and (run / "head.pt").is_file():
        print(f"  with the head  {run}/head.pt: Google's speech embedding + a classifier trained on the same clips, "
              f"pooled with the BiLSTM (README, \"The embedding head\")")
    print(f"  test accuracy  {report['accuracy']:.4f} on held-out synthetic speakers "
          f"(confusion matrix in {paths['model'].parent}/eval-{a.data.name}-test/)")
    print(f"  next: kws stream --model {paths['model']} --mic")
    gain = "" if a.no_head else "; on FSDD's speakers 87% -> 98%"
    print(f"  your own voice (5 takes of each word{gain}): kws record --model {paths['model']} "
          f"--out data/mine --takes 5 && kws train --init {run} --data {a.data} data/mine --repeat 1 20 --epochs 3 "
          f"--out {run}_mine{' --head' if not a.no_head else ''} && kws export {run}_mine")
    seed = f" --seed {a.seed}" if a.seed else ""
    more, run6 = f"{a.data}_t6", f"{run}_t6"
    print(f"  fewer false accepts in a stream: three times the clips, then one threshold chosen on a validation "
          f"stream (README, \"Calibrated for 0.5 false accepts per hour\"):\n"
          f"    kws synth --out {more} --takes 6 --unknown-per-speaker 30{seed} && kws train --data {more} "
          f"--out {run6} --epochs {a.epochs}{seed} && kws export {run6} && kws calibrate --model "
          f"{run6}/model.onnx --data {a.data}")


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

    t = add("train", cmd_train, "Train the BiLSTM classifier on one or more dataset folders.")
    t.add_argument("--data", type=Path, nargs="+", required=True, help="dataset folder(s): Speech Commands layout or folder-per-word")
    t.add_argument("--out", type=Path, required=True, help="run folder for checkpoints, metrics and curves")
    t.add_argument("--task", choices=["auto", "12", "all"], default="auto", help="labels: 12 = the 10 Speech Commands "
                   "keywords + _unknown_ + _silence_; all = every word folder; auto = words.txt of the data, else all")
    t.add_argument("--words", type=word_list, default=None, help="comma-separated target words (overrides --task)")
    t.add_argument("--noise-dir", type=Path, action="append", default=[], help="extra folder of background-noise "
                   "recordings for augmentation (repeatable)")
    t.add_argument("--batch-size", type=positive_int, default=128, help="clips per batch (default 128)")
    t.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (default 3e-3; "
                   "1e-3 with --init)")
    t.add_argument("--hidden", type=positive_int, default=ModelConfig.hidden, help="LSTM hidden size per direction "
                   f"(of the first tower, with --mfcc-tower; default {ModelConfig.hidden})")
    t.add_argument("--layers", type=positive_int, default=2, help="stacked LSTM layers (default 2)")
    t.add_argument("--frame-stack", type=frame_stack_arg, default=ModelConfig.frame_stack, help="neighbouring MFCC "
                   f"frames joined into one LSTM step (default {ModelConfig.frame_stack}: 20 ms steps; 1 = every "
                   "10 ms frame, about 1.5x slower to train and to run)")
    t.add_argument("--conv", type=conv_channels_arg, default=None, metavar="C", help="C filters of a 3x5 convolution "
                   f"over the log-mel spectrum before the LSTM (default {ModelConfig.conv_channels}; 0: none, the LSTM "
                   "reads the MFCC frames; without --conv, --n-mfcc below 40 means none). Measured in README, Results")
    t.add_argument("--mfcc-tower", type=nonneg_int, default=ModelConfig.mfcc_tower, metavar="H", help="a second "
                   "BiLSTM stack of hidden size H with its own head on the MFCC frames; the model averages the two "
                   "towers' probabilities: more accurate on FSDD's real speakers, less on the Speech Commands ones and in "
                   f"the synthetic stream (default {ModelConfig.mfcc_tower}: one tower). Measured in README, Results")
    t.add_argument("--n-mfcc", type=n_mfcc_arg, default=40, help="MFCC coefficients per frame, at most the 40 "
                   "mel bands (default 40)")
    t.add_argument("--f-min", type=f_min_arg, default=FeatureConfig.f_min, help="lowest frequency of the mel "
                   "filterbank in Hz (default %(default)g)")
    t.add_argument("--dropout", type=fraction, default=0.15, help="dropout between layers and before the head (default 0.15)")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--ema-decay", type=fraction, default=0.0, help="validate, keep and export an exponential moving "
                   "average of the weights with this decay per step, e.g. 0.995 (default 0: off)")
    t.add_argument("--trim-prob", type=fraction, default=AugmentConfig.trim_prob,
                   help="share of training clips cut to the word and a {:g}-{:g} ms margin, digital silence "
                   "elsewhere, as short trimmed recordings padded to the window are (default %(default)s)"
                   .format(*AugmentConfig.trim_margin_ms))
    t.add_argument("--free-position", action="store_true", help="place each word anywhere in the window and train "
                   "8%% of keyword clips, cut to a fragment at its edge, as _unknown_: fewer false accepts in a "
                   "stream, lower accuracy on real speakers (README, Results)")
    t.add_argument("--repeat", type=positive_int, nargs="+", default=None, metavar="N", help="how often an epoch "
                   "uses each --data folder's training clips, one number per folder in order (default 1 each): "
                   "e.g. --data data/synth data/mine --repeat 1 20 to let a few own recordings count")
    t.add_argument("--teacher", type=Path, nargs="+", default=None, metavar="RUN", help="distillation: also "
                   "learn these trained runs' averaged probabilities (same words and front-end), so one model "
                   "gets closer to their ensemble (weight and temperature: --set train.distill_weight=0.5 "
                   "--set train.distill_temperature=2)")
    t.add_argument("--set", action="append", default=None, metavar="SECTION.FIELD=VALUE", help="set any other "
                   "config value, e.g. train.unknown_fraction=0.07 or train.augment.vtlp=0.8,1.25 (repeatable; "
                   "fields: pipeline/config.py; saved with the model like every setting)")
    t.add_argument("--minutes", type=positive_float, default=None, help="time budget: after the first epoch, "
                   "lower --epochs to as many as fit in this many minutes (at least 20), the learning-rate decay laid "
                   "over them, and again after any later epoch if they no longer fit; the checkpoint records the "
                   "number run (default: no budget)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    t.add_argument("--init", type=Path, default=None, help="fine-tune: start from this run folder (its best.pt) "
                   "or .pt checkpoint, keeping its words, features, model and normalisation; the data must "
                   "have clips of all its words (pass data/synth too)")
    t.add_argument("--jobs", type=positive_int, default=jobs_default(), help="processes for decoding audio")
    t.add_argument("--head", action="store_true", help="then train the embedding head too (`kws train-head` "
                   "with its defaults; a few minutes on 2 cores): far more accurate on real speakers when the "
                   "training voices are synthetic")
    train_flags(t)

    e = add("export", cmd_export, "Export a run to ONNX (waveform model, frames model, front-end); several "
            "runs of the same words and front-end export as one model that averages their probabilities.")
    e.add_argument("run", type=Path, nargs="+", help="run folder (uses best.pt) or a .pt checkpoint; several: "
                   "an ensemble (e.g. trainings with other --seed), one classifier each at inference")
    e.add_argument("--out", type=Path, default=None, help="output .onnx path, or a folder for FOLDER/model.onnx "
                   "(default RUN/model.onnx; required with several runs)")
    e.add_argument("--int8", action="store_true", help="also write dynamically quantised INT8 models")
    e.add_argument("--no-head", action="store_true", help="leave out the embedding head (RUN/head.pt, from "
                   "`kws train-head`), which is otherwise pooled with the BiLSTM")

    h = add("train-head", cmd_train_head, "Train a classifier on Google's pretrained speech embedding for a "
            "trained run (RUN/head.pt): `kws export RUN` then pools it with the BiLSTM (--pooling); far more accurate on "
            "real speakers when the training voices are synthetic (README, Results).")
    h.add_argument("run", type=Path, help="trained run folder (its best.pt gives the words and the front-end)")
    h.add_argument("--data", type=Path, nargs="+", required=True, help="dataset folder(s) to train on, as for "
                   "`kws train` (its training split; validation split for the printed accuracy)")
    h.add_argument("--copies", type=positive_int, default=HeadConfig.copies, help="embedded copies of each training "
                   f"clip: the clean one and copies-1 augmented ones (default {HeadConfig.copies}; each copy of "
                   "7,700 clips takes 40-70 s on 2 cores)")
    h.add_argument("--epochs", type=positive_int, default=HeadConfig.epochs, help=f"epochs of the head's training "
                   f"(default {HeadConfig.epochs})")
    h.add_argument("--windows", type=positive_int, default=HeadConfig.windows, help="embedding windows (76 frames, "
                   f"0.77 s each) per 1-s window, the last ending with it (default {HeadConfig.windows}); each costs "
                   "1.3-2.9 ms on one core, once per window a stream sees: a stride that divides the hop (10 frames "
                   "at 100 ms) lets the stream embed only the hop's new windows")
    h.add_argument("--stride", type=positive_int, default=HeadConfig.stride, help="frames (10 ms) between "
                   f"consecutive embedding windows (default {HeadConfig.stride}: 1 new window per 100-ms hop)")
    h.add_argument("--context", type=positive_int, default=HeadConfig.context, help="consecutive vectors the "
                   f"classifier reads at once; its probabilities are averaged over the runs of them (default {HeadConfig.context})")
    h.add_argument("--hidden", type=positive_int, default=HeadConfig.hidden, help=f"width of the classifier's two "
                   f"hidden layers (default {HeadConfig.hidden})")
    h.add_argument("--pooling", choices=POOLINGS, default=HeadConfig.pooling, help="how the exported model joins "
                   "the head's probabilities with the BiLSTM's: geometric (their normalised geometric mean, a "
                   "product of experts) or mean (arithmetic; the choice before the twenty-seventh session); "
                   f"the head's streaming thresholds are set for it (default {HeadConfig.pooling})")
    h.add_argument("--repeat", type=positive_int, nargs="+", default=None, metavar="N", help="how often the "
                   "head's training uses each --data folder's clips, one number per folder, as for `kws train` "
                   "(default 1 each): e.g. --data data/synth data/mine --repeat 1 20 for a few own recordings")
    h.add_argument("--seed", type=int, default=0, help="seed of the augmentation and the head's weights (default 0)")
    h.add_argument("--cache-dir", type=Path, default=Path("data/cache"), help="decoded-clip cache (default data/cache)")
    h.add_argument("--jobs", type=positive_int, default=jobs_default(), help="processes for decoding audio")

    pr = add("predict", cmd_predict, "Print the label and score of each audio file (onnxruntime, no torch).")
    pr.add_argument("--model", type=Path, required=True, help="exported model.onnx")
    pr.add_argument("files", type=Path, nargs="+", help="audio files (any rate, mono or stereo)")

    ev = add("evaluate", cmd_evaluate, "Accuracy, per-class precision/recall and confusion matrix on a dataset.")
    ev.add_argument("--model", type=Path, required=True, help="model.onnx (no torch), or a run folder / .pt")
    ev.add_argument("--data", type=Path, nargs="+", required=True, help="dataset folder(s)")
    ev.add_argument("--split", choices=["test", "val", "train", "all"], default="test", help="which split (default test)")
    ev.add_argument("--json", type=Path, default=None, help="also write the JSON report here")
    ev.add_argument("--out", type=Path, default=None, help="folder for confusion.png and report.json "
                    "(default: next to the model, eval-<data>-<split>/)")
    ev.add_argument("--jobs", type=positive_int, default=jobs_default(), help="processes for reading audio")

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
    train_flags(d)

    from .stream_cli import add_stream_commands
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
