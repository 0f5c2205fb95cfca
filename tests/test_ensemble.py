"""`kws export RUN RUN --out F`: several runs as one model that averages their probabilities."""
import json

import numpy as np
import onnx
import pytest

from conftest import kws
from pipeline.audio import load_clip
from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.ensemble import mean_thresholds
from pipeline.runtime import OnnxModel, sibling


@pytest.fixture(scope="module")
def second_run(tiny_data, tmp_path_factory):
    """Another, shorter training of the tiny model with another seed, exported on its own."""
    run = tmp_path_factory.mktemp("runs") / "tiny_s1"
    kws("train", "--data", tiny_data, "--out", run, "--epochs", "4", "--hidden", "32", "--mfcc-tower", "0", "--layers", "1",
        "--batch-size", "32", "--lr", "5e-3", "--seed", "1", "--cache-dir", tmp_path_factory.mktemp("cache"),
        "--device", "cpu", "--jobs", "2")
    kws("export", run)
    return run


@pytest.fixture(scope="module")
def ensemble(tiny_run, tiny_model, second_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("ens") / "model.onnx"
    p = kws("export", tiny_run, second_run, "--out", out, "--int8")
    assert "2 runs averaged" in p.stdout
    return out


def test_ensemble_graphs_average_their_members(ensemble, tiny_model, second_run, real_clips):
    x = np.stack([load_clip(p, 16000, 16000) for p in real_clips])
    a, b = OnnxModel(tiny_model), OnnxModel(second_run / "model.onnx")
    ens = OnnxModel(ensemble)
    assert ens.labels == a.labels and ens.config == a.config
    assert np.abs(ens.scores(x) - (a.scores(x) + b.scores(x)) / 2).max() < 1e-5
    # the streaming graph (classifier on frames) averages the members' frames graphs the same way
    frames = OnnxModel(sibling(ensemble, "frontend")).run(x[:1])
    fa, fb = OnnxModel(sibling(tiny_model, "frames")), OnnxModel(sibling(second_run / "model.onnx", "frames"))
    assert np.abs(OnnxModel(sibling(ensemble, "frames")).run(frames) - (fa.run(frames) + fb.run(frames)) / 2).max() < 1e-5
    # metadata: both members described, thresholds the members' mean
    meta = {p.key: p.value for p in onnx.load(str(ensemble)).metadata_props}
    members = json.loads(meta["ensemble"])
    assert [m["model"]["hidden"] for m in members] == [48, 32]
    assert ens.thresholds == mean_thresholds([a.thresholds, b.thresholds])
    q = OnnxModel(ensemble.with_name("model.int8.onnx"))
    assert (q.scores(x).argmax(1) == ens.scores(x).argmax(1)).mean() >= 0.8


def test_ensemble_streams_like_one_model(ensemble, real_clips):
    p = kws("stream", "--model", ensemble, "--wav", real_clips[0], "--json")
    assert p.returncode == 0 and "Traceback" not in p.stderr


def test_mean_thresholds():
    assert mean_thresholds([{"yes": 0.8, "no": 0.9}, {"yes": 0.9}]) == {"no": 0.9, "yes": 0.85}


def test_ensemble_needs_an_out_file_and_matching_runs(tiny_run, second_run, tmp_path):
    p = kws("export", tiny_run, second_run, check=False)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "kws: error: --out: give the output .onnx file when exporting several runs as one model"]
    ck = load_checkpoint(tiny_run / "best.pt")
    for name, change in [("band.pt", lambda c: c["features"].update(f_min=300.0)),
                         ("words.pt", lambda c: c.update(labels=["yes", "no", "go", "_unknown_", "_silence_"]))]:
        cfg = json.loads(ck["run_config"].to_json())
        change(cfg)
        save_checkpoint({"model": ck["model"], "config": cfg, "labels": cfg["labels"], "epoch": 1,
                         "best_val_acc": 0.0}, tmp_path / name)
        p = kws("export", tiny_run, tmp_path / name, "--out", tmp_path / "x.onnx", check=False)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        line, = p.stderr.strip().splitlines()
        assert str(tmp_path / name) in line and ("f_min" in line if name == "band.pt" else "words" in line), line
    assert not (tmp_path / "x.onnx").exists()


def test_export_out_may_be_a_folder_but_not_another_file_type(tiny_run, tmp_path):
    kws("export", tiny_run, "--out", tmp_path)
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.frames.onnx").is_file()
    p = kws("export", tiny_run, "--out", tmp_path / "model.txt", check=False)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"kws: error: --out {tmp_path / 'model.txt'}: give a file name ending in .onnx (or a folder, for FOLDER/model.onnx)"]
