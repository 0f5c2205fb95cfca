"""Train the embedding head of a run (`kws train-head RUN --data DIR`): writes ``RUN/head.pt``,
which `kws export RUN` then puts into the exported graphs beside the BiLSTM.

    clips (train split, the run's words) -> clean + (copies - 1) augmented (the training's own
    augmentation) -> embedding log-mel (batch, 98, 32) -> the head's windows (5 by default) -> embedding (onnxruntime)
    -> (clips * copies, windows, 96) vectors -> MLP, ``epochs`` of AdamW, one-cycle schedule

The embedding is frozen and computed once per copy (the slow part: about 1 ms per window on a
2-core CPU); the MLP then trains in seconds per epoch. Validation accuracy of the head alone and
pooled with the BiLSTM (``HeadConfig.pooling``) is printed and saved in ``RUN/head_metrics.json``, the loss per epoch
drawn in ``RUN/head_curves.png``. ``head.pt`` is written
atomically, so a killed run leaves the previous head as it was.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .checkpoint import load_model
from .config import HeadConfig, RunConfig
from .data import PreparedData, check_repeats, clip_repeats, prepare
from .datasets.augment import Augmenter
from .device_clips import thresholds_from_validation
from .embedding_head import EmbeddingHead, check_features, head_path, pool
from .embedding_net import EmbeddingLogMel, load_pretrained
from .speech_embedding import DIM, N_MELS, WINDOW_FRAMES, fetch_models
from .features import MFCC
from .word_head import (WordEmbedder, check_window, embed_words, fit_word_mlp, gate_open, new_word_head, pool_word,
                        word_probs)
from .malloc import keep_freed_memory
from .plots import plot_loss
from .vector_fit import embed_clips, embed_copies, fit_one_cycle


#: Lowest per-word streaming threshold of a model with the head, by ``HeadConfig.pooling``. The
#: mean: with 5 windows smoothed it was 0.7 (validation stream, `kws calibrate --model M --data
#: data/synth --minutes 120`: floor 0.8 79.6% hits at 1.5 false accepts/hour, 0.7 91.3% at 2.5, 0.6
#: 95.8% at 6). With 3 (SMOOTH_WINDOWS), whose mean follows the scores faster, 0.8: on four head
#: models' test hour 0.7 gave 2-7 false accepts/hour at 91.4-92.4% hits, 0.8 0-2 at 86.2-87.4% (README
#: "Shorter smoothing, higher floor"). The geometric mean keeps more of the models' confidence,
#: on non-keywords too: on the twenty-sixth session's demo model's 2-hour validation stream
#: (`kws stream-eval --split val --minutes 120`, one threshold for every word) it made 4.5 false
#: accepts/hour at 0.9 with 82.7% hits, where the mean made 5.5 at 0.8 with 84.7% (README "Two
#: models pooled as a product").
THRESHOLD_FLOOR = {"mean": 0.8, "geometric": 0.9}


class Embedder:
    """(batch, samples) float32 -> (batch, windows, 96): the torch log-mel, then the upstream
    embedding graph on onnxruntime (4x faster on a CPU than the same network in torch; equal within 2e-5)."""

    def __init__(self, logmel: EmbeddingLogMel, starts: list[int], threads: int = 0):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(fetch_models() / "embedding_model.onnx"), opts,
                                            providers=["CPUExecutionProvider"])
        self.logmel, self.starts = logmel, starts

    @torch.no_grad()
    def __call__(self, wave: torch.Tensor) -> np.ndarray:
        lm = self.logmel(wave.float().cpu()).numpy()
        win = np.stack([lm[:, s:s + WINDOW_FRAMES] for s in self.starts], axis=1)      # (b, w, 76, 32)
        b, w = win.shape[:2]
        out = self.session.run(None, {"input_1": np.ascontiguousarray(win.reshape(b * w, WINDOW_FRAMES, N_MELS, 1))})[0]
        return out.reshape(b, w, DIM)


def embed_split(embed: Embedder, audio: np.ndarray, augment: Augmenter | None, desc: str, batch: int = 256,
                order: np.ndarray | None = None) -> np.ndarray:
    """(clips, samples) int16 -> (clips, windows, 96) float32; augmented when ``augment`` is given.
    ``order`` (n,): the clips to embed, in this order, a clip as often as it is there (default all, once)."""
    return embed_clips(embed, audio, augment, desc, batch, (len(embed.starts), DIM), order)


def fit_mlp(head: EmbeddingHead, x: np.ndarray, y: np.ndarray, cfg: HeadConfig) -> list[float]:
    """Train ``head.mlp`` on vectors (n, windows, 96) and labels (n,) -> mean loss per epoch."""
    mlp = head.mlp.train()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    # the MLP's output is normalised log-probabilities, which cross_entropy's log_softmax keeps
    losses = fit_one_cycle(mlp.parameters(), lambda b: F.cross_entropy(mlp(xt[b]), yt[b], label_smoothing=cfg.label_smoothing),
                           len(xt), cfg.batch_size, cfg.epochs, cfg.lr, cfg.weight_decay, cfg.seed, "head")
    mlp.eval()
    return losses


@torch.no_grad()
def _probs_head(head: EmbeddingHead, vec: np.ndarray) -> np.ndarray:
    return torch.cat([head.mlp(torch.from_numpy(vec[i:i + 1024])).exp() for i in range(0, len(vec), 1024)]).numpy()


@torch.no_grad()
def _probs_bilstm(cfg: RunConfig, clf: torch.nn.Module, audio: np.ndarray) -> np.ndarray:
    mfcc = MFCC(cfg.features)
    out = [torch.softmax(clf(mfcc(torch.from_numpy(audio[i:i + 256].astype(np.float32) / 32768.0))), -1)
           for i in range(0, len(audio), 256)]
    return torch.cat(out).numpy()


def pooled(head: np.ndarray, bilstm: np.ndarray, pooling: str) -> np.ndarray:
    """(clips, classes) probabilities of the head and the BiLSTM -> the exported model's (embedding_head.pool)."""
    with torch.no_grad():
        log = lambda p: torch.from_numpy(p).double().clamp_min(1e-30).log()
        return pool(log(bilstm), log(head), pooling).exp().numpy()


def save_head(path: Path, head: EmbeddingHead, logmel: EmbeddingLogMel, run_cfg: RunConfig, extra: dict) -> None:
    """Atomically (temp file + rename): weights, configs, labels, the front-end it was trained for."""
    weights = {k: v for k, v in head.state_dict().items() if not k.startswith("word.")}
    if head.word is not None:           # its MLP only: the network is the fetched graph's (word_net.py)
        extra = {**extra, "word_mlp": head.word.mlp.state_dict()}
    state = {"head": weights, "logmel": logmel.state_dict(), "embedding_layers": head.embedding.spec,
             "head_config": dataclasses.asdict(head.cfg), "labels": list(run_cfg.labels),
             "features": dataclasses.asdict(run_cfg.features), **extra}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_head(run: Path, roots: list[Path], cfg: HeadConfig, cache_dir: Path, jobs: int = 1,
               data: PreparedData | None = None, repeats: tuple[int, ...] = (), log=print) -> dict:
    """Train the head of ``run`` (folder with best.pt) on ``roots`` -> metrics; writes RUN/head.pt.
    ``repeats``: as `kws train --repeat`, how often each folder's training clips are used (one number
    per folder; each use of a clip is a copy of its own, differently augmented). Tunes glibc's
    allocator for the process (pipeline/malloc.py)."""
    t0 = time.time()
    check_repeats(roots, repeats)
    keep_freed_memory()
    run_cfg, clf = load_model(run)
    check_features(run_cfg.features, cfg)
    if cfg.word:
        check_window(run_cfg.features.n_frames)
    logmel, net = load_pretrained()                        # fetches the graphs before any decoding
    if data is None:
        data = prepare(roots, run_cfg.features, dataclasses.replace(run_cfg.train, seed=cfg.seed), cache_dir,
                       labels=run_cfg.labels, jobs=jobs, labels_from=f"{run}")
    head = EmbeddingHead(cfg, len(run_cfg.labels), run_cfg.features.n_frames, net)
    embed = Embedder(logmel, head.starts)
    torch.manual_seed(cfg.seed)
    aug = Augmenter(run_cfg.train.augment, run_cfg.features, data.noise_bank, "cpu")
    tr = data.splits["train"]
    per_clip = clip_repeats(tr.files, roots, repeats)
    order = None if per_clip is None else np.repeat(np.arange(len(tr)), per_clip)   # (uses,); None: each once
    labels = tr.labels if order is None else tr.labels[order]                       # (uses,)
    x = embed_copies(embed_split, embed, tr.audio, aug, cfg.copies, order, "embed")
    t_embed = time.time() - t0
    losses = fit_mlp(head, x, np.tile(labels, cfg.copies), cfg)
    thresholds: dict[str, float] = {}
    metrics = {"train_clips": len(tr), "copies": cfg.copies, "embed_s": round(t_embed, 1), "loss": losses}
    if order is not None:
        metrics.update(data_repeats=list(repeats), train_uses=len(order))
    if cfg.word:
        t1 = time.time()
        head.word = new_word_head(tuple(run_cfg.labels), cfg.word_gate)
        wembed = WordEmbedder(head.word)
        torch.manual_seed(cfg.seed + 1)
        wx = embed_copies(embed_words, wembed, tr.audio, aug, 2, order, "word embedding")
        metrics["word_loss"] = fit_word_mlp(head.word.mlp, wx, np.tile(labels, 2), cfg.seed)
        metrics["word_s"] = round(time.time() - t1, 1)
    val = data.splits["val"]
    if len(val):
        ph = _probs_head(head, embed_split(embed, val.audio, None, "embed val"))
        pb = _probs_bilstm(run_cfg, clf, val.audio)
        metrics["val_acc_head"] = float(np.mean(ph.argmax(1) == val.labels))
        metrics["val_acc_bilstm"] = float(np.mean(pb.argmax(1) == val.labels))
        both = pooled(ph, pb, cfg.pooling)
        if cfg.word:
            pw = word_probs(head.word.mlp, embed_words(wembed, val.audio, None, "word embedding val"))
            metrics["val_acc_word"] = float(np.mean(pw.argmax(1) == val.labels))
            three = pool_word(torch.from_numpy(both).double().clamp_min(1e-30).log(),
                              torch.from_numpy(pw).double().clamp_min(1e-30).log()).exp().numpy()
            both = np.where(gate_open(both, head.word.keywords.numpy(), cfg.word_gate)[:, None], three, both)
        metrics["val_acc_both"] = float(np.mean(both.argmax(1) == val.labels))
        thresholds = thresholds_from_validation(both, val.labels, run_cfg.labels, floor=THRESHOLD_FLOOR[cfg.pooling])
    metrics["seconds"] = round(time.time() - t0, 1)
    out = head_path(run)
    save_head(out, head, logmel, run_cfg, {"metrics": metrics, "thresholds": thresholds})
    (out.parent / "head_metrics.json").write_text(json.dumps(metrics, indent=1))
    plot_loss(losses, out.parent / "head_curves.png", f"embedding head: {cfg.copies} copies of {len(tr)} clips")
    if "val_acc_head" in metrics:
        word = f", word head {metrics['val_acc_word']:.4f}" if "val_acc_word" in metrics else ""
        log(f"validation accuracy: head {metrics['val_acc_head']:.4f}, BiLSTM {metrics['val_acc_bilstm']:.4f}{word}, "
            f"both {metrics['val_acc_both']:.4f}")
    log(f"wrote {out} ({metrics['seconds'] / 60:.1f} min); `kws export {run}` puts it into the model")
    return metrics
