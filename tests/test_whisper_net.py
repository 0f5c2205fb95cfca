"""Whisper tiny.en as a zero-shot word scorer (pipeline/whisper_net.py, scripts/whisper_pool.py):
its model-file reader against a file written here, its BPE against Hugging Face tokenizers' ids, its
front-end against an independent numpy one, its shortcut (each distinct prefix normalised once)
against the plain log-softmax, batched against per-clip, and the real weights on spoken words."""
from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np
import pytest
import torch

from conftest import REPO
from pipeline.audio import read_audio
from pipeline.errors import ModelError
from pipeline.whisper_net import BPE, WordScorer, fetch_whisper, log_mel, read_ct2


def write_ct2(path, variables: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    """CTranslate2's binary format (version 6), written from its specification, apart from the reader."""
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}

    def text(s: str) -> bytes:
        return struct.pack("H", len(s) + 1) + s.encode() + b"\0"
    out = struct.pack("I", 6) + text("WhisperSpec") + struct.pack("I", 3) + struct.pack("I", len(variables))
    for name, a in variables.items():
        out += text(name) + struct.pack("B", a.ndim) + b"".join(struct.pack("I", d) for d in a.shape)
        out += struct.pack("B", codes[a.dtype]) + struct.pack("I", a.nbytes) + a.tobytes()
    out += struct.pack("I", len(aliases)) + b"".join(text(k) + text(v) for k, v in aliases.items())
    path.write_bytes(out)


def test_read_ct2_reads_what_the_format_says_and_refuses_other_files(tmp_path):
    rng = np.random.default_rng(0)
    v = {"a/weight": rng.standard_normal((3, 4)).astype(np.float16), "b/scale": np.array(7, np.int16),
         "c/bias": rng.standard_normal(5).astype(np.float32)}
    write_ct2(tmp_path / "model.bin", v, {"d/weight": "a/weight"})
    got = read_ct2(tmp_path / "model.bin")
    assert set(got) == {"a/weight", "b/scale", "c/bias", "d/weight"}
    for k, a in v.items():
        assert got[k].dtype == a.dtype and got[k].shape == a.shape and np.array_equal(got[k], a)
    assert np.array_equal(got["d/weight"], v["a/weight"])
    (tmp_path / "bad.bin").write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="bad.bin: not a CTranslate2 model file"):
        read_ct2(tmp_path / "bad.bin")


@pytest.fixture(scope="module")
def folder():
    return fetch_whisper()


def test_bpe_gives_hugging_face_tokenizers_ids(folder):
    # ids from tokenizers 0.23.3 on the same tokenizer.json (Tokenizer.encode(s, add_special_tokens=False))
    ref = {" yes": [3763], " Four.": [6675, 13], " Seven!": [13723, 0], " 4.": [604, 13],
           " Sheila?": [49627, 30], " off": [572], " Zero": [12169]}
    bpe = BPE(folder / "tokenizer.json")
    assert {s: bpe.encode(s) for s in ref} == ref


def test_log_mel_equals_a_numpy_front_end():
    import librosa
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(12000) * 0.05).astype(np.float32)
    x[2000:6000] += 0.3 * np.sin(2 * np.pi * 440 * np.arange(4000) / 16000).astype(np.float32)
    got = log_mel(torch.from_numpy(x)[None], frames=100)[0].numpy()
    y = np.pad(np.pad(x.astype(np.float64), (0, 16000 - len(x))), 200, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)            # periodic Hann
    frames = np.lib.stride_tricks.sliding_window_view(y, 400)[::160][:100]
    power = np.abs(np.fft.rfft(frames * window)) ** 2
    lg = np.log10(np.maximum(power @ librosa.filters.mel(sr=16000, n_fft=400, n_mels=80).T, 1e-10)).T
    ref = (np.maximum(lg, lg.max() - 8) + 4) / 4
    assert got.shape == (80, 100)
    assert np.abs(got - ref).max() < 1e-4


@pytest.fixture(scope="module")
def scorer(folder):
    return WordScorer(["yes", "no", "stop", "seven", "left"], folder)


def test_prefix_shortcut_equals_the_plain_log_softmax_and_batch_equals_per_clip(scorer):
    rng = np.random.default_rng(2)
    waves = torch.from_numpy((rng.standard_normal((2, 16000)) * 0.05).astype(np.float32))
    got = scorer.scores(waves)
    net, seq, mask = scorer.net, scorer.seq, scorer.mask
    lp = net.log_probs(net.decode(seq[:, :-1], net.encode(log_mel(waves[:1])))[0])
    per = (lp.gather(-1, seq[:, 1:, None])[..., 0] * mask).sum(1)
    plain = torch.stack([torch.logsumexp(per[scorer.owner == i], 0) for i in range(len(scorer.words))])
    assert torch.allclose(got[0], plain, atol=1e-3)
    assert torch.allclose(scorer.scores(waves[1:]), got[1:], atol=1e-4)


@pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng is not installed (scripts/setup.sh installs it)")
def test_real_weights_tell_spoken_words_apart(scorer, tmp_path):
    for word in scorer.words:
        wav = tmp_path / f"{word}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), word], check=True)
        s = scorer.scores(torch.from_numpy(read_audio(wav, 16000))[None])[0]
        assert scorer.words[int(s.argmax())] == word, (word, s.tolist())


def test_pool_weighs_whisper_in_and_gives_unknown_the_non_keywords():
    from pipeline.verifier import pool
    labels, words = ["yes", "no", "_unknown_", "_silence_"], ["yes", "no", "bed", "cat"]
    p = np.array([[0.6, 0.3, 0.05, 0.05], [0.2, 0.2, 0.5, 0.1]])
    w = np.log(np.array([[0.1, 0.9, 1e-6, 1e-6], [0.05, 0.05, 0.6, 0.3]]))
    assert np.allclose(pool(p, w, labels, words, 0.0), np.log(p))
    got = pool(p, w, labels, words, 1.0)
    assert got[0].argmax() == 1                                      # Whisper's sure "no" outweighs 0.6 / 0.3
    assert np.isclose(got[1, 2], np.log(0.5) + np.log(0.9))          # _unknown_: bed + cat
    assert np.isclose(got[1, 3], np.log(0.1) + np.log(1 / 4))        # _silence_: an even share


def test_whisper_pool_script_on_spoken_clips(tiny_model, tmp_path):
    import json
    import sys
    root = tmp_path / "shared" / "gsc_subset"
    for word in ("yes", "no", "stop", "bed"):
        (root / word).mkdir(parents=True)
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(root / word / f"s0_{word}.wav"), word], check=True)
    out = tmp_path / "r.json"
    script = str(REPO / "scripts" / "whisper_pool.py")
    p = subprocess.run([sys.executable, script, str(tiny_model), "--shared", str(tmp_path / "shared"),
                        "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "fsdd: not found, skipped" in p.stdout
    r = json.loads(out.read_text())
    assert set(r) == {"gsc_subset_model", "gsc_subset_whisper", "gsc_subset_pooled"}
    assert r["gsc_subset_whisper"]["keywords"] == 1.0 and r["gsc_subset_whisper"]["clips"] == 3
    assert 0 <= r["gsc_subset_pooled"]["all"] <= 1
    bad = subprocess.run([sys.executable, script, str(tmp_path / "missing.onnx")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "missing.onnx" in bad.stderr and "Traceback" not in bad.stderr
