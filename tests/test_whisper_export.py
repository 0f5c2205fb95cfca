"""`kws export --whisper`: Whisper tiny.en's word scorer as model.whisper.onnx (pipeline/whisper_export.py),
pooled with the model by `kws predict` and `kws evaluate` (pipeline/verifier.py, torch-free): the ONNX
graph against the PyTorch scorer on spoken words, the commands with and without it, a wrong file refused."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, kws
from pipeline.errors import ModelError
from pipeline.verifier import WhisperVerifier, fit_start, whisper_path

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng is not installed (scripts/setup.sh)")
WORDS = ("yes", "no", "stop")


@pytest.fixture(scope="module")
def whisper_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run (the shared one stays without Whisper), exported with --whisper."""
    run = tmp_path_factory.mktemp("whisper") / "run"
    run.mkdir()
    for f in tiny_run.iterdir():
        if f.suffix in (".pt", ".json"):
            shutil.copy(f, run / f.name)
    p = kws("export", run, "--whisper", "--int8")
    assert "model.whisper.onnx" in p.stdout and "model.whisper.int8.onnx" in p.stdout and "max |d loglik|" in p.stdout
    return run


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    d = tmp_path_factory.mktemp("spoken")
    for w in WORDS:
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(d / f"{w}.wav"), w], check=True)
    return [d / f"{w}.wav" for w in WORDS]


def test_fit_start_and_whisper_path(tmp_path):
    assert np.array_equal(fit_start(np.ones(3), 5), [1, 1, 1, 0, 0])
    assert np.array_equal(fit_start(np.arange(9), 4), [0, 1, 2, 3])
    assert whisper_path("r/model.onnx").name == "model.whisper.onnx"
    assert whisper_path("r/model.int8.onnx").name == "model.whisper.onnx"
    assert whisper_path("r/other.onnx").name == "other.whisper.onnx"
    (tmp_path / "model.whisper.int8.onnx").touch()          # the INT8 model takes the INT8 Whisper graph
    assert whisper_path(tmp_path / "model.int8.onnx") == tmp_path / "model.whisper.int8.onnx"
    assert whisper_path(tmp_path / "model.onnx") == tmp_path / "model.whisper.onnx"


def test_onnx_graph_equals_the_pytorch_scorer_on_spoken_words(whisper_run, spoken):
    import torch

    from pipeline.audio import read_audio
    from pipeline.whisper_net import WordScorer
    v = WhisperVerifier(whisper_run / "model.whisper.onnx")
    assert v.words == list(WORDS) and v.samples == 24000 and v.sample_rate == 16000
    waves = [read_audio(f, 16000) for f in spoken]
    got = v.log_likelihoods(waves)
    ref = WordScorer(list(WORDS)).scores(torch.from_numpy(np.stack([fit_start(w, 24000) for w in waves]))).numpy()
    assert np.abs(got - ref).max() < 1e-3
    assert [v.words[i] for i in got.argmax(1)] == list(WORDS)
    q = WhisperVerifier(whisper_run / "model.whisper.int8.onnx")      # INT8 weights: the same words win
    assert q.words == v.words and [q.words[i] for i in q.log_likelihoods(waves).argmax(1)] == list(WORDS)
    with pytest.raises(ModelError, match="made for labels"):
        v.check_labels(["up", "down", "_unknown_", "_silence_"], "other.onnx")


def test_predict_and_evaluate_pool_with_it_and_without_torch(whisper_run, spoken, tiny_data):
    model = whisper_run / "model.onnx"
    p = kws("predict", "--model", model, *spoken)
    assert "pooled with Whisper tiny.en" in p.stderr
    rows = [line.split("\t") for line in p.stdout.strip().splitlines()]
    assert [r[1] for r in rows] == list(WORDS) and all(0 < float(r[2]) <= 1 for r in rows)
    alone = kws("predict", "--model", model, "--no-whisper", *spoken)
    assert "Whisper" not in alone.stderr and alone.stdout != p.stdout
    from test_export_runtime import BLOCK_TORCH                # the device path: no torch with Whisper either
    b = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "predict", "--model", str(model), *map(str, spoken)],
                       cwd=REPO, capture_output=True, text=True)
    assert b.returncode == 0 and b.stdout == p.stdout, b.stderr
    out = whisper_run / "r.json"
    kws("evaluate", "--model", model, "--data", tiny_data, "--json", out, "--jobs", "1")
    r = json.loads(out.read_text())
    assert r["whisper"].endswith("model.whisper.onnx") and (whisper_run / "eval-whisper-tiny-test" / "confusion.png").is_file()
    kws("evaluate", "--model", model, "--data", tiny_data, "--json", out, "--jobs", "1", "--no-whisper")
    assert json.loads(out.read_text())["whisper"] is None


def test_a_file_that_is_not_a_whisper_graph_is_refused(tiny_model, tmp_path, spoken):
    shutil.copy(tiny_model, tmp_path / "model.onnx")
    shutil.copy(tiny_model, tmp_path / "model.whisper.onnx")
    p = kws("predict", "--model", tmp_path / "model.onnx", spoken[0], check=False)
    assert p.returncode == 2 and "model.whisper.onnx: not a Whisper scorer graph" in p.stderr
    assert "Traceback" not in p.stderr


def test_whisper_stream_script_replays_the_detector_with_whisper(whisper_run, tiny_data, tmp_path):
    from pipeline.stream import Detector
    from pipeline.stream_eval import smoothed
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), 12).astype(np.float32)
    det = Detector(["a", "b", "_unknown_", "_silence_"], {}, smooth=3)
    ref = []
    for p in probs:
        det.update(0.0, p)
        ref.append(det.smoothed())
    assert np.allclose(smoothed(probs, 3), ref, atol=1e-6)
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "whisper_stream.py"), str(whisper_run / "model.onnx"),
                        "--data", str(tiny_data), "--minutes", "0.5", "--thresholds", "0.5,0.9", "--out", str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    lines = [line for line in p.stdout.splitlines() if line.startswith("threshold")]
    assert len(lines) == 2 and "with Whisper" in lines[0] and (tmp_path / "s" / "scores.npz").is_file()


def test_non_keywords_give_whisper_an_unknown_of_its_own(tmp_path, spoken):
    from pipeline.audio import read_audio
    from pipeline.whisper_export import export_whisper
    labels = [*WORDS, "_unknown_", "_silence_"]
    out = export_whisper(labels, tmp_path / "m.whisper.onnx", non_keywords=["bed", "yes"], log=lambda *a: None)
    v = WhisperVerifier(out)
    assert v.words == [*WORDS, "bed"] and v.labels == labels
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(tmp_path / "bed.wav"), "bed"], check=True)
    waves = [read_audio(f, 16000) for f in [*spoken, tmp_path / "bed.wav"]]
    pooled = v.pooled(np.full((4, len(labels)), 1 / len(labels), np.float32), v.log_likelihoods(waves))
    assert [labels[i] for i in pooled.argmax(1)] == [*WORDS, "_unknown_"]
    assert np.allclose(pooled.sum(1), 1, atol=1e-5)
    p = kws("export", tmp_path, "--whisper-non-keywords", check=False)
    assert p.returncode == 2 and "--whisper-non-keywords: goes with --whisper" in p.stderr
