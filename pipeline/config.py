"""Typed configuration that travels with the weights.

Every constant the front-end, the model and the training loop use lives here. A
:class:`RunConfig` (features + model + training + labels) is stored in each checkpoint and
as JSON in the ONNX metadata, so export, evaluation and streaming read it from the artifact,
never from these defaults.

This module imports only the standard library: the torch-free device path uses it too.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

UNKNOWN = "_unknown_"
SILENCE = "_silence_"
BACKGROUND_DIR = "_background_noise_"

#: The ten Speech Commands keywords and the ten digits: the default vocabulary.
SPEECH_COMMANDS_10 = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_WORDS = SPEECH_COMMANDS_10 + DIGITS
#: Streaming: after a detection nothing fires for this long. A word stays in a 1-s window until
#: ~1 s after it ends, so a 1.0 s refractory let one word fire twice (measured with stream-eval).
REFRACTORY_MS = 1500
#: Streaming: a detection needs the mean score of the last N windows (hop 100 ms) over threshold.
#: The first BiLSTMs: N=3 39 false accepts/h at 89.7% hits, N=5 16/h at 88.6%, so 5 (stream-eval,
#: held-out synthetic speakers, 60 min). With the embedding head (twenty-fourth session, four head
#: models' stored window scores replayed, README "Shorter smoothing, higher floor"), N=3 with the
#: head's threshold floor at 0.8 hit 86.2-87.4% at 0-2 false accepts/h, median latency 261-277 ms,
#: against 83.3-84.9% at 0-1/h and 317-327 ms for N=5 at 0.7. Models calibrated with `kws calibrate`
#: stream with the N their threshold was chosen for.
SMOOTH_WINDOWS = 3
#: `kws calibrate`: minutes of validation stream (at 0.5 false accepts/h up to 6; two 360-minute
#: layouts of the same speakers made 3 and 9 at one threshold and chose 0.81 and 0.90; README).
CALIBRATE_MINUTES = 720.0
#: Most MFCC frames one LSTM step may join (ModelConfig.frame_stack).
MAX_FRAME_STACK = 8
MAX_CONV_CHANNELS = 64
DEFAULT_ENGINES = ("espeak", "flite", "piper", "hibari")   # kws synth; see datasets/synth.py


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class FeatureConfig:
    """MFCC front-end. Frames are not centred (no padding), so a stream's frames equal offline frames."""

    sample_rate: int = 16000
    clip_samples: int = 16000          # the classifier's window: 1 s
    n_fft: int = 400                   # 25 ms analysis window (periodic Hann)
    hop_length: int = 160              # 10 ms hop
    n_mels: int = 40
    n_mfcc: int = 40
    # Below 100 Hz a microphone adds DC offset, rumble and mains hum that say nothing about the word
    # (FSDD's nicolas has a DC offset in every file). Measured (40 epochs, seeds 0 / 1): 20 Hz gave
    # FSDD 74.9% (seed 0; 71-74% for other runs), 100 Hz 77.4 / 77.6%; held-out synthetic 98.6 / 98.2%.
    f_min: float = 100.0
    f_max: float = 4000.0              # narrow band: the same features from any mic, 8 kHz files included
    log_eps: float = 1e-6              # log(mel + eps): no per-clip scaling anywhere

    def __post_init__(self) -> None:
        _check(self.sample_rate > 0, "sample_rate must be positive")
        _check(0 < self.n_fft <= self.clip_samples, "n_fft must be in (0, clip_samples]")
        _check(0 < self.hop_length <= self.n_fft, "hop_length must be in (0, n_fft]")
        _check(0 < self.n_mfcc <= self.n_mels, "n_mfcc must be in (0, n_mels]")
        _check(0 <= self.f_min < self.f_max <= self.sample_rate / 2, "need 0 <= f_min < f_max <= sample_rate/2")
        _check(self.log_eps > 0, "log_eps must be positive")

    def differing(self, other: "FeatureConfig") -> list[str]:
        """Names of the fields whose values differ from ``other``'s."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def frames_for(self, samples: int) -> int:
        """Frames produced from ``samples`` samples (0 when shorter than one window)."""
        return 0 if samples < self.n_fft else 1 + (samples - self.n_fft) // self.hop_length

    @property
    def n_frames(self) -> int:
        return self.frames_for(self.clip_samples)


@dataclass(frozen=True)
class ModelConfig:
    """Stacked bidirectional LSTM over MFCC frames, mean+max pooling over time, linear head."""

    n_mfcc: int = 40
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.15
    n_classes: int = 22
    # Frames joined per LSTM step: (frames, n_mfcc) -> (frames // k, k * n_mfcc), so the recurrence
    # runs k times fewer steps (20 ms steps at k = 2). Its sequential steps are most of the cost of
    # training and inference on a CPU. Measured (H200 sweep, 40 epochs, held-out synthetic incl.
    # _unknown_ / FSDD / GSC): k=1 98.2/72.0/70.1%, k=2 99.2/69.0/71.1% and seed 1 97.2/69.2/76.3%,
    # k=3 96.6/72.5/70.1%, k=4 97.8/69.2/63.9%; a CPU step costs 0.46x (k=2) of k=1's LSTM work.
    frame_stack: int = 2
    # Convolution over frequency before the LSTM (0 = none): the MFCC frames are turned back into a
    # log-mel spectrum (inverse DCT; needs n_mfcc == n_mels), then a 3x5 (time x mel) Conv2d with
    # conv_channels filters, ReLU and max-pooling of mel-bin pairs, so a formant that moves by a bin
    # between voices moves less in what the LSTM sees: (frames, n_mfcc) -> (frames, C * n_mfcc // 2).
    # Measured, CPU, 40 epochs (held-out synthetic / FSDD / GSC 20 words, means): C=4 99.6 / 74.3 /
    # 84.1% (four trainings), C=8 99.7 / 71.4 / 83.2% (three), C=0 98.5 / 77.6 / 75.8% (two).
    conv_channels: int = 4
    conv_skip: bool = False            # feed the LSTM the normalised MFCC frames beside the conv's output
    # A second tower (0 = none): a BiLSTM stack of this hidden size with its own head on the MFCC
    # frames themselves, trained with its own loss on the same batches; the model outputs the mean
    # of the two towers' probabilities (an ensemble of two different models in one training).
    # Measured, CPU (kws train --hidden 96 --mfcc-tower 96; three trainings against the four of the
    # default): FSDD 79.5 against 74.3%, Speech Commands subset 81.8 against 84.1% (20 words) and
    # 73.4 against 77.2% (all clips), synthetic stream 70.7-82.8% hits at <= 1 false accept per hour
    # against 93.3 / 96.2% for two default trainings; 1.27x the training time. A trade, so off by
    # default (README, Results).
    mfcc_tower: int = 0

    def __post_init__(self) -> None:
        _check(self.hidden > 0 and self.layers > 0, "hidden and layers must be positive")
        _check(self.mfcc_tower >= 0, "mfcc_tower must be >= 0")
        _check(0 <= self.conv_channels <= MAX_CONV_CHANNELS, f"conv_channels must be in [0, {MAX_CONV_CHANNELS}]")
        _check(1 <= self.frame_stack <= MAX_FRAME_STACK, f"frame_stack must be in [1, {MAX_FRAME_STACK}]")
        _check(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")
        _check(self.n_classes >= 2, "need at least two classes")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-only, batch-level augmentation (see pipeline/datasets/augment.py)."""

    # Placement: a shift of +-shift_ms, or (free_position) anywhere the word fits in the window,
    # with partial_word_prob of keyword clips cut to a fragment at the edge and relabelled _unknown_.
    # Measured, one run each (stream-eval, FSDD): free placement + fragments cut false accepts/h
    # 39 -> 21 at smooth 3, but FSDD accuracy 74.5 -> 71.1% and hits 89.7 -> 86.7%; two runs of one
    # configuration differ by as much, so nothing showed it better: off by default.
    free_position: bool = False
    shift_ms: float = 100.0
    partial_word_prob: float = 0.0
    partial_keep: tuple[float, float] = (0.1, 0.45)   # share of the word left inside the window
    noise_prob: float = 0.8            # chance a clip gets background noise
    snr_db: tuple[float, float] = (0.0, 25.0)
    speed: tuple[float, float] = (0.85, 1.15)   # resampling factor: tempo and pitch together
    vtlp: tuple[float, float] = (0.88, 1.12)    # mel filterbank warp: formants alone (vocal tract length)
    band_prob: float = 0.5             # random low-pass (channel band) 3.4-8 kHz, tilt EQ
    eq_db: float = 0.0                 # + a smooth random EQ curve of about +-eq_db over log frequency
    reverb_prob: float = 0.3
    gain_db: tuple[float, float] = (-30.0, 8.0)       # real recordings: speech at -50 to -10 dBFS
    clip_prob: float = 0.05            # hard clipping at a random level
    # Trimmed recordings: a share of the clips keeps only the word plus trim_margin_ms on each side
    # and is digital silence elsewhere, as a short file (FSDD's are 0.4 s) padded to the window.
    trim_prob: float = 0.0
    trim_margin_ms: tuple[float, float] = (0.0, 150.0)
    time_masks: int = 2                # SpecAugment
    time_mask_frames: int = 10
    freq_masks: int = 2
    freq_mask_bins: int = 5
    time_warp_frames: int = 0          # SpecAugment time warp: an anchor frame moves by up to this

    def __post_init__(self) -> None:
        _check(self.time_warp_frames >= 0, "time_warp_frames must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    label_smoothing: float = 0.05
    ema_decay: float = 0.0             # > 0: validate, keep and export an EMA of the weights
    data_repeats: tuple[int, ...] = () # per --data folder (in order): uses of its clips per epoch
    seed: int = 0
    silence_fraction: float = 0.08     # of training clips, cut from background noise
    unknown_fraction: float = 0.10     # cap on _unknown_ clips, as a fraction of the split
    unknown_per_epoch: bool = False    # True: draw the capped _unknown_ clips afresh each epoch (README: no gain)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Distillation (pipeline/distill.py): runs whose averaged probabilities the model also learns.
    teachers: tuple[str, ...] = ()
    distill_weight: float = 0.5        # share of the loss on the teachers' soft targets
    distill_temperature: float = 2.0
    # mixup: each clip's features become lam * own + (1 - lam) * another clip's of the batch, and its
    # loss the same mix of both labels' losses; lam ~ Beta(mixup_alpha, mixup_alpha), 0 = off.
    mixup_alpha: float = 0.0

    def __post_init__(self) -> None:
        _check(self.epochs > 0, "epochs must be positive")
        _check(self.batch_size > 0, "batch_size must be positive")
        _check(self.lr > 0, "lr must be positive")
        _check(0.0 <= self.ema_decay < 1.0, "ema_decay must be in [0, 1)")
        _check(all(isinstance(r, int) and r >= 1 for r in self.data_repeats), "data_repeats must be whole numbers >= 1")
        _check(0.0 <= self.distill_weight <= 1.0, "distill_weight must be in [0, 1]")
        _check(self.distill_temperature > 0, "distill_temperature must be positive")
        _check(self.mixup_alpha >= 0, "mixup_alpha must be >= 0")


POOLINGS = ("geometric", "mean")       # HeadConfig.pooling


@dataclass(frozen=True)
class HeadConfig:
    """A classifier on Google's pretrained speech embedding (pipeline/embedding_head.py), beside the
    BiLSTM: its own log-mel frames (32 bands, same framing as the MFCC) -> ``windows`` windows of 76
    frames, ``stride`` frames apart, the last ending with the model's window -> 96-dim vectors ->
    each run of ``context`` consecutive
    vectors -> MLP (``hidden``, LayerNorm, ReLU, ``dropout``; two layers) -> probabilities averaged
    over the runs. The exported model pools its probabilities with the BiLSTM's (``pooling``). Training
    (``kws train-head``): the embedding of every training clip, clean and in ``copies - 1``
    augmented copies, then ``epochs`` of AdamW with a one-cycle schedule up to ``lr``."""

    # Measured (head alone, data/synth, seed 0; FSDD / Speech Commands words): 3 windows spread over
    # the 1-s window, context 3 87.8 / 73.2%; 6 windows ~4.4 frames apart, context 3 88.1 / 77.3%,
    # context 2 88.6 / 80.4%: the more runs averaged, the less a word's place in the window matters.
    # 3 windows 10 frames apart against 5 windows 5 apart (twenty-third session, the same BiLSTM, head
    # seeds 0 and 1; FSDD / Speech Commands words; held-out synthetic): 88.75, 88.05 / 86.6, 85.6 /
    # 98.3, 98.5% against 87.75, 87.65 / 86.6, 86.6 / 98.2, 98.5%; synthetic stream within a point at
    # every threshold. A stream at 100-ms hops (10 frames) then embeds 1 new window per hop instead of
    # 2 (real-time factor 0.061 against 0.091), and training embeds 3 windows per clip instead of 5.
    windows: int = 3
    stride: int = 10
    context: int = 2
    hidden: int = 256
    dropout: float = 0.3
    # How the exported model joins the head's probabilities with the BiLSTM's: "geometric" (the
    # normalised geometric mean, a product of experts: log-probabilities averaged) or "mean" (the
    # arithmetic mean; the only pooling before the twenty-seventh session, and what a head.pt saved
    # without this field keeps). Measured on two demo models (README, Results, "Two models pooled
    # as a product"): where the BiLSTM is unsure of a real voice and the head is sure, the mean
    # halves the head's confidence. At <= 0.5 false accepts/hour on the synthetic validation stream
    # the geometric mean hit 12 points more keywords and caught 2-9 points more streamed real
    # clips; per clip it scored 0.25-0.65 points lower on FSDD (0-3 of 97 Speech Commands clips).
    pooling: str = "geometric"
    # Training: 6 copies and batches of 256 (lr 2e-3) gave FSDD 87.3 / 86.8 / 87.6% and Speech
    # Commands 88.7 / 91.8 / 87.6% (seeds 0 / 1 / 2, with runs/default) in 6.2 min on 2 cores; 4 copies
    # and batches of 1024 (lr 4e-3) 87.6% and 88.7% (seed 0) in 3.9 min, so `kws demo` fits its time.
    # 2 copies (twenty-second session, another BiLSTM, on a CPU half as fast): 88.3% and 89.7% in 3.5
    # min, against 88.1% and 88.7% for 4 copies in 6.9 min.
    copies: int = 2
    epochs: int = 60
    lr: float = 4e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.05
    batch_size: int = 1024
    seed: int = 0
    # A second classifier, on EfficientWord-Net's word embedding (pipeline/word_head.py, `kws
    # train-head --word`), pooled with the two: README, Results, "A word embedding trained on real speech".
    word: bool = False
    # The word network runs only on windows where some keyword's probability, the BiLSTM's and the
    # embedding head's pooled, reaches this (word_head.gate_open): elsewhere those two decide alone.
    # Measured (thirty-sixth session; README "A word embedding trained on real speech"; one word head,
    # FSDD / Speech Commands words): gate 0 and 0.02 90.25 / 92.8%, 0.05 90.2 / 92.8%, 0.1 90.2 / 91.75%,
    # 0.2 89.95 / 90.7%; at 0.05 the synthetic test stream's real-time factor 0.080 against 0.156 ungated
    # (the network ran on about half its windows: words every ~1.7 s), the same hits and false accepts.
    word_gate: float = 0.05

    def __post_init__(self) -> None:
        _check(self.windows >= 1 and 1 <= self.context <= self.windows, "need windows >= context >= 1")
        _check(self.stride >= 1, "stride must be at least 1")
        _check(self.hidden > 0, "hidden must be positive")
        _check(0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)")
        _check(self.pooling in POOLINGS, f"pooling must be one of {', '.join(POOLINGS)}")
        _check(self.copies >= 1, "copies must be at least 1")
        _check(self.epochs >= 1, "epochs must be at least 1")
        _check(0.0 <= self.word_gate < 1.0, "word_gate must be in [0, 1)")
        _check(self.lr > 0 and self.batch_size > 0, "lr and batch_size must be positive")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HeadConfig":
        try:
            return _build(cls, d)
        except TypeError as e:
            raise ConfigError(f"saved head config does not fit this version: {e}") from None


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rebuild a model and its front-end: saved with the weights."""

    labels: tuple[str, ...]
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check(len(self.labels) == self.model.n_classes, "model.n_classes must equal the number of labels")
        _check(len(set(self.labels)) == len(self.labels), "labels must be unique")
        _check(self.model.n_mfcc == self.features.n_mfcc, "model.n_mfcc must equal features.n_mfcc")
        _check(not self.model.conv_channels or self.features.n_mfcc == self.features.n_mels,
               "model.conv_channels needs n_mfcc == n_mels (the convolution runs on the inverted DCT)")
        _check(2 * self.train.augment.time_warp_frames + 1 < self.features.n_frames,
               f"time_warp_frames must be below half the window's {self.features.n_frames} frames")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        try:
            train = dict(d.get("train", {}))
            train["augment"] = _build(AugmentConfig, train.get("augment", {}))
            model = dict(d.get("model", {}))
            if model:                         # saved before frame stacking / the convolution existed
                model.setdefault("frame_stack", 1)
                model.setdefault("conv_channels", 0)
                model.setdefault("mfcc_tower", 0)
            return cls(
                labels=tuple(d["labels"]),
                features=_build(FeatureConfig, d.get("features", {})),
                model=_build(ModelConfig, model),
                train=_build(TrainConfig, train),
            )
        except (KeyError, TypeError) as e:
            raise ConfigError(f"saved config does not fit this version: {e}") from None

    @classmethod
    def from_json(cls, s: str) -> "RunConfig":
        try:
            return cls.from_dict(json.loads(s))
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from None


def _build(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**kwargs)
