"""Torch-free streaming recognition: frame cache, re-scored window, smoothing, thresholds, refractory.

A bidirectional LSTM carries no state across windows, so the last ``window`` of audio is re-scored
every ``hop``. The MFCC frames of the overlap are not recomputed: each hop runs the front-end graph
(``model.frontend.onnx``) on just the samples its new frames need, appends them to a frame cache,
and runs the classifier graph (``model.frames.onnx``) on the last ``window`` frames. The frames of a
window equal the offline front-end's frames of the same samples (frames are not centred, and
there is no per-clip scaling), so every window's scores equal offline scores of those samples.

With the embedding head (`kws train-head`), the head's 76-frame windows of one hop are mostly those
of the hops before, shifted: each is embedded once, its vector kept in a vector cache under its
absolute first frame, and each hop runs ``model.cached.onnx`` on the MFCC frames and the window's
vectors. At hop 100 ms and the head's default stride of 10 frames that embeds 1 window per hop
instead of 3 (2 of 5 at a stride of 5). A window is embedded in two parts
(``embedding_net.split_net``): the convolutional stem, a function of absolute frames, runs as a
stream (``model.embed_stem.onnx`` takes the hop's new frames and the last rows of its convolutions
from the call before), its positions kept in a stem cache, so each frame goes through it once;
``model.embed_tail.onnx`` turns the new window's positions into its vector. Without those three
files the head's frames graph re-embeds every window.

    scorer = StreamingScorer("model.onnx", hop_ms=100)
    for t_end, probs in scorer.push(chunk):          # chunk: (samples,) float32 at the model's rate
        det = detector.update(t_end, probs)          # a Detection or None
"""
from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .audio import noise_floor
from .config import REFRACTORY_MS, SILENCE, SMOOTH_WINDOWS, UNKNOWN
from .errors import StreamError
from .config import HeadConfig
from .runtime import OnnxModel, pool_word_np, sibling
from .speech_embedding import N_MELS, window_starts


class StreamingScorer:
    """Pushes audio in, yields ``(time of the window's last sample in s, probs (classes,))`` per hop."""

    def __init__(self, model_path: str | Path, hop_ms: int = 100, window_ms: int | None = None, threads: int = 1):
        path = Path(model_path)
        self.model = OnnxModel(path, threads)
        frontend, frames = sibling(path, "frontend"), sibling(path, "frames")
        for graph in (frontend, frames):
            if not graph.is_file():
                raise StreamError(f"{graph}: no such model file; the stream needs it beside {path.name}: "
                                  f"`kws export` writes it, copy {frontend.name} and {frames.name} along with the model")
        self.frontend = OnnxModel(frontend, threads)
        self.classifier = OnnxModel(frames, threads)
        self.labels = self.model.labels
        f = self.feats = self.model.config.features
        self.sample_rate = f.sample_rate
        frame_ms = 1000 * f.hop_length / f.sample_rate
        if hop_ms <= 0 or abs(hop_ms / frame_ms - round(hop_ms / frame_ms)) > 1e-9:
            raise StreamError(f"--hop-ms: must be a positive multiple of the {frame_ms:g} ms frame hop, got {hop_ms}")
        window_ms = window_ms or round(1000 * f.clip_samples / f.sample_rate)
        self.window_samples = int(round(window_ms * f.sample_rate / 1000))
        self.window_frames = f.frames_for(self.window_samples)
        if self.window_frames < 1 or window_ms < hop_ms:
            raise StreamError(f"--window-ms: must be at least --hop-ms and one {1000 * f.n_fft / f.sample_rate:g} ms frame, got {window_ms}")
        fixed = self.classifier.session.get_inputs()[0].shape[1]      # the exported classifier's frames
        if isinstance(fixed, int) and fixed != self.window_frames:
            model_ms = round(1000 * f.clip_samples / f.sample_rate)
            raise StreamError(f"--window-ms: {path.name} scores {model_ms} ms windows (the length of its training "
                              f"clips), got {window_ms}")
        self.hop_frames = int(round(hop_ms / frame_ms))
        self.hop_samples = self.hop_frames * f.hop_length      # audio per hop
        self.stem = self.tail = self.cached = None
        self.note = ""                                         # a line for the user, if the stream runs the slow way
        head = self.model.session.get_modelmeta().custom_metadata_map.get("embedding_head")
        hcfg = HeadConfig.from_dict(json.loads(head)) if head else None
        graphs = [sibling(path, k) for k in ("embed_stem", "embed_tail", "cached") + (("word",) if hcfg and hcfg.word else ())]
        if head and not all(g.is_file() for g in graphs):
            missing = ", ".join(g.name for g in graphs if not g.is_file())
            self.note = (f"note: no {missing} beside {path.name}: the stream re-embeds every window of the "
                         "embedding head each hop (several times the work); `kws export` writes them")
        self.word = None
        if head and all(g.is_file() for g in graphs):         # the stem and vector caches (module docstring)
            self.stem, self.tail, self.cached = (OnnxModel(g, threads) for g in graphs[:3])
            if hcfg.word:                                      # the word head, run where its gate opens
                self.word = OnnxModel(graphs[3], threads)
                self.keywords = np.array([not l.startswith("_") for l in self.model.labels], np.float32)
            for g in (self.stem, self.tail, self.cached) + ((self.word,) if self.word else ()):
                meta = g.session.get_modelmeta().custom_metadata_map
                if g.config != self.model.config or meta.get("embedding_head") != head:
                    raise StreamError(f"{g.path}: from another export than {path.name}; copy the graphs "
                                      "`kws export` wrote together (or delete it: the stream then runs without it)")
            try:
                geometry = json.loads(self.stem.session.get_modelmeta().custom_metadata_map["embed_stem"])
                self.stem_stride, self.stem_field = int(geometry["time_stride"]), int(geometry["field"])
            except (KeyError, TypeError, ValueError):
                raise StreamError(f"{self.stem.path}: no 'embed_stem' metadata (export it again with `kws export`)") from None
            self.stem_span = self.tail.session.get_inputs()[0].shape[2]      # stem positions per window
            self.stem_zero = {i.name: np.zeros(i.shape, np.float32) for i in self.stem.session.get_inputs()[1:]}
            self.starts = window_starts(self.window_frames, hcfg.windows, hcfg.stride)
            self.word_gate = hcfg.word_gate
        self.embedded = 0                                      # windows embedded so far (vector cache)
        self.word_runs = 0                                     # windows the word head scored (its gate open)
        self.stem_frames = 0                                   # frames the stem has run on so far
        self.reset()

    def reset(self) -> None:
        self.buffer = np.zeros(0, np.float32)      # samples from the start of the next frame on
        self.window: np.ndarray | None = None      # the last frames (window_frames, width), oldest first
        self.n_frames = 0                          # frames computed so far
        self.vectors: dict[int, np.ndarray] = {}   # absolute first frame of a head window -> (96,)
        self.grids: dict[int, _StemStream] = {}   # the stem cache, per residue modulo the stem's time stride

    def _new_frames(self, k: int) -> np.ndarray:
        """Compute the next ``k`` frames from the buffer: (k, width), n_mfcc (+ 32 with the head)."""
        f = self.feats
        need = (k - 1) * f.hop_length + f.n_fft
        seg = self.buffer[:need][None, :]
        out = self.frontend.run(seg)[0]                        # (k, n_mfcc)
        self.buffer = self.buffer[k * f.hop_length:]
        return out

    def push(self, chunk: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """Add samples ``(n,)`` float32; return the scores of every window completed by them."""
        f = self.feats
        self.buffer = np.concatenate([self.buffer, np.asarray(chunk, np.float32).reshape(-1)])
        results = []
        while len(self.buffer) >= (self.hop_frames - 1) * f.hop_length + f.n_fft:
            k, wf = self.hop_frames, self.window_frames
            new = self._new_frames(k)                                 # (k, width)
            if self.window is None:
                self.window = np.zeros((wf, new.shape[1]), np.float32)
            if k >= wf:
                self.window[:] = new[k - wf:]
            else:
                self.window[:wf - k] = self.window[k:]               # numpy copies overlapping rows safely
                self.window[wf - k:] = new
            self.n_frames += k
            if self.n_frames >= wf:                                   # the window is full
                window = self.window
                probs = self._cached(window) if self.stem else self.classifier.run(window[None])[0]
                end = (self.n_frames - 1) * f.hop_length + f.n_fft      # samples covered so far
                results.append((end / f.sample_rate, probs))
        return results

    def _cached(self, window: np.ndarray) -> np.ndarray:
        """(window_frames, n_mfcc + 32) -> (classes,): embeds the head's windows not in the cache."""
        first = self.n_frames - self.window_frames               # absolute index of window[0]
        need = [first + s for s in self.starts]
        for a in [a for a in self.vectors if a < first]:
            del self.vectors[a]
        n_mfcc = self.feats.n_mfcc
        new = [a for a in need if a not in self.vectors]
        if new:
            d, n = self.stem_stride, self.stem_span
            for r in {a % d for a in new}:
                same = [a for a in new if a % d == r]
                self._stem(r, min(same), max(same) + d * n, window[:, n_mfcc:n_mfcc + N_MELS], first)
            grids = [self.grids[a % d] for a in new]
            stems = np.stack([g.positions[:, (a - g.first) // d:(a - g.first) // d + n] for a, g in zip(new, grids)])
            self.vectors.update(zip(new, self.tail.run(stems)))  # (new, channels, n, bins) -> (new, 96)
            self.embedded += len(new)
        vec = np.stack([self.vectors[a] for a in need])[None]
        p = self.cached.session.run(None, {"frames": window[None, :, :n_mfcc], "vectors": vec})[0]
        if self.word is not None and (p[0] * self.keywords).max() >= self.word_gate:
            lw = self.word.session.run(None, {"frames": np.ascontiguousarray(window[None, :, n_mfcc + N_MELS:])})[0]
            p = pool_word_np(p, lw)
            self.word_runs += 1
        return p[0]

    def _stem(self, r: int, lo: int, hi: int, logmel: np.ndarray, first: int) -> None:
        """Make the stem cache of residue ``r`` hold the positions from absolute frame ``lo`` to before
        ``hi``: the stem continues from its state on the frames after those it has seen, or starts
        afresh from zero states at ``lo`` (its first outputs, which saw the zeros, dropped); positions
        before the window (``first``) are dropped. ``logmel``: (window_frames, 32), from frame ``first``."""
        d, field = self.stem_stride, self.stem_field
        end = hi - d + field                          # the frame after the last wanted position's field
        g = self.grids.get(r)
        if g is not None:
            top = g.first + d * g.positions.shape[1]  # the first frame of the position after its last
            start, state, skip = top - d + field, g.state, 0
            if not (g.first <= lo <= top and start >= first):
                g = None                              # a gap, or its next frames left the window: start afresh
        if g is None:
            start, state, skip = lo, self.stem_zero, field // d - 1
        if start < end:
            seg = np.ascontiguousarray(logmel[start - first:end - first][None])              # (1, frames, 32)
            out = self.stem.session.run(None, {"logmel": seg, **state})
            self.stem_frames += seg.shape[1]
            pos, state = out[0][0, :, skip:], dict(zip(self.stem_zero, out[1:]))          # (channels, k, bins)
            g = _StemStream(lo, pos, state) if g is None else \
                _StemStream(g.first, np.concatenate([g.positions, pos], axis=1), state)
        drop = max(0, -(-(first - g.first) // d))
        self.grids[r] = _StemStream(g.first + d * drop, g.positions[:, drop:], g.state)

    def window_start_sample(self, t_end: float) -> int:
        """Absolute first sample of the window that ended at ``t_end`` (for offline comparison)."""
        f = self.feats
        end = int(round(t_end * f.sample_rate))
        return end - f.n_fft - (self.window_frames - 1) * f.hop_length


class _StemStream(NamedTuple):
    """One stream of the embedding's stem: the positions it has computed, and its state."""
    first: int                        # absolute first frame of positions[:, 0]
    positions: np.ndarray             # (channels, n, bins): position k from frame first + stride * k on
    state: dict[str, np.ndarray]      # the last rows of its convolutions, as its next call takes them


@dataclass
class Detection:
    time: float          # seconds from stream start (end of the window that fired)
    label: str
    score: float


class Detector:
    """Posterior smoothing over the last ``smooth`` windows, per-label thresholds, refractory period.

    ``_unknown_`` and ``_silence_`` never fire. After a detection nothing fires for ``refractory_s``,
    so one utterance sliding through successive windows fires once.
    """

    def __init__(self, labels: list[str], thresholds: dict[str, float], default: float = 0.8,
                 smooth: int = SMOOTH_WINDOWS, refractory_s: float = REFRACTORY_MS / 1000):
        self.labels = labels
        self.thr = np.array([thresholds.get(l, default) for l in labels], np.float32)
        self.active = np.array([not (l in (UNKNOWN, SILENCE) or l.startswith("_")) for l in labels])
        self.smooth, self.refractory = smooth, refractory_s
        self.reset()

    def reset(self) -> None:
        self.hist: deque[np.ndarray] = deque(maxlen=self.smooth)
        self.last_fire = -1e9

    def smoothed(self) -> np.ndarray:
        return np.mean(self.hist, axis=0)

    def update(self, t: float, probs: np.ndarray) -> Detection | None:
        self.hist.append(probs)
        p = self.smoothed()
        k = int(np.argmax(p))
        if self.active[k] and p[k] >= self.thr[k] and t - self.last_fire >= self.refractory:
            self.last_fire = t
            return Detection(round(t, 3), self.labels[k], float(p[k]))
        return None


def with_quiet_margins(x: np.ndarray, scorer: StreamingScorer, margin_ms: float | None = None,
                       smooth: int = SMOOTH_WINDOWS) -> tuple[np.ndarray, float]:
    """A recording framed for streaming: (samples,) -> ((margin + samples + margin,), margin in s).

    Quiet floor (``audio.noise_floor``, -70 dBFS) before and after, as a microphone hears the room
    around a word, so a word at the file's very start or end passes through every position of the
    window, as in a live stream. A 1-s clip alone fills no 1-s window (the first ends 1.015 s in).
    ``margin_ms`` defaults to the window plus the ``smooth`` windows averaged, and is rounded up to
    whole hops, so windows inside the file fall where they would without margins. Subtract the
    margin from detection times to get the file's clock."""
    step = scorer.hop_samples
    if margin_ms is None:
        margin_ms = 1000 * (scorer.window_samples + smooth * step) / scorer.sample_rate
    margin = -(-int(round(scorer.sample_rate * margin_ms / 1000)) // step) * step
    quiet = noise_floor(margin)
    return np.concatenate([quiet, np.asarray(x, np.float32), quiet]), margin / scorer.sample_rate


class RingBuffer:
    """Fixed-capacity float32 FIFO shared by the audio callback (writer) and the inference thread.

    When full, the oldest samples are dropped and counted: the stream falls behind gracefully
    instead of growing memory.
    """

    def __init__(self, capacity: int):
        self.data = np.zeros(capacity, np.float32)
        self.capacity, self.start, self.size, self.dropped = capacity, 0, 0, 0
        self.cond = threading.Condition()

    def write(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32).reshape(-1)
        with self.cond:
            if len(x) > self.capacity:
                self.dropped += len(x) - self.capacity
                x = x[-self.capacity:]
            over = self.size + len(x) - self.capacity
            if over > 0:
                self.start = (self.start + over) % self.capacity
                self.size -= over
                self.dropped += over
            end = (self.start + self.size) % self.capacity
            first = min(len(x), self.capacity - end)
            self.data[end:end + first] = x[:first]
            self.data[:len(x) - first] = x[first:]
            self.size += len(x)
            self.cond.notify()

    def read(self, timeout: float = 0.1) -> np.ndarray:
        """Everything buffered (possibly empty after ``timeout`` seconds)."""
        with self.cond:
            if not self.size:
                self.cond.wait(timeout)
            idx = (self.start + np.arange(self.size)) % self.capacity
            out = self.data[idx].copy()
            self.start, self.size = (self.start + self.size) % self.capacity, 0
            return out
