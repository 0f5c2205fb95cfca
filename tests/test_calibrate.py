"""`kws calibrate`: the threshold it writes is the one the stream then runs at, with the figures it promised."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, kws
from pipeline.config import SMOOTH_WINDOWS
from test_export_runtime import BLOCK_TORCH


def copy_model(tiny_model, dest):
    dest.mkdir()
    for name in ("model.onnx", "model.frames.onnx", "model.frontend.onnx"):
        shutil.copy(tiny_model.parent / name, dest / name)
    return dest / "model.onnx"


def test_calibrated_threshold_is_what_the_stream_uses(tiny_model, tiny_data, tmp_path):
    """Calibrate on the validation stream (torch blocked: the device path), then stream-eval the same
    stream with the model's stored thresholds: the hits and false accepts the calibration chose by
    replaying window scores are exactly those the live streaming path gets."""
    from pipeline.runtime import OnnxModel
    model = copy_model(tiny_model, tmp_path / "m")
    words = [w for w in OnnxModel(model).labels if not w.startswith("_")]
    target = 60.0                                   # 2 minutes: at most 2 false accepts
    args = ["calibrate", "--model", model, "--data", tiny_data, "--minutes", "2", "--target-fa", str(target),
            "--out", tmp_path / "cal"]
    p = subprocess.run([sys.executable, "-c", BLOCK_TORCH, *map(str, args)], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    cal = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    th = cal["threshold"]
    assert cal["false_accepts_per_hour"] <= target and cal["split"] == "val"
    ok = [r for r in cal["sweep"] if r["false_accepts_per_hour"] <= target]
    assert min(r["miss_rate"] for r in ok) == pytest.approx(1 - cal["hit_rate"], abs=1e-4)
    assert f"threshold {th:g} for every word" in p.stdout

    for name in ("model.onnx", "model.frames.onnx", "model.frontend.onnx"):
        m = OnnxModel(tmp_path / "m" / name)
        assert m.thresholds == {w: pytest.approx(th) for w in words}
        meta = m.session.get_modelmeta().custom_metadata_map
        assert json.loads(meta["calibration"])["threshold"] == th and "labels" in meta and "config" in meta

    clip = next((tiny_data / "yes").glob("*.wav"))         # `kws stream` says which thresholds it runs at
    assert f"threshold {th:g} for every word (kws calibrate: <= 60" in kws("stream", "--model", model, "--wav", clip).stderr
    assert "(set at export from validation clips)" in kws("stream", "--model", tiny_model, "--wav", clip).stderr

    kws("stream-eval", "--model", model, "--data", tiny_data, "--split", "val", "--minutes", "2",
        "--json", tmp_path / "r.json", "--out", tmp_path / "se")
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["hit_rate"] == pytest.approx(cal["hit_rate"], abs=1e-4)
    assert r["false_accepts_per_hour"] == pytest.approx(cal["false_accepts_per_hour"], abs=1e-3)
    assert r["smooth"] == cal["smooth"] == SMOOTH_WINDOWS
    assert "calibration" not in OnnxModel(tiny_model).session.get_modelmeta().custom_metadata_map   # copies only


def test_the_stream_smooths_as_the_threshold_was_calibrated(tiny_model, tmp_path):
    """A threshold chosen for N smoothed windows holds only with N: a model calibrated with another N
    (an older default) streams with its own unless --smooth says otherwise."""
    from pipeline.stream import StreamingScorer
    from pipeline.stream_cli import make_detector, model_smoothing
    scorer = StreamingScorer(copy_model(tiny_model, tmp_path / "m"))
    assert scorer.model.calibration is None and model_smoothing(scorer, None) == SMOOTH_WINDOWS
    scorer.model.calibration = {"threshold": 0.9, "smooth": SMOOTH_WINDOWS + 2}
    assert make_detector(scorer, None, None, 1500).smooth == SMOOTH_WINDOWS + 2
    assert make_detector(scorer, None, 1, 1500).smooth == 1


def test_choose_most_hits_at_or_under_the_target():
    from pipeline.calibrate import choose
    sweep = [{"threshold": 0.5, "miss_rate": 0.01, "false_accepts_per_hour": 9.0},
             {"threshold": 0.7, "miss_rate": 0.03, "false_accepts_per_hour": 0.5},
             {"threshold": 0.75, "miss_rate": 0.03, "false_accepts_per_hour": 0.0},
             {"threshold": 0.9, "miss_rate": 0.10, "false_accepts_per_hour": 0.0}]
    assert choose(sweep, 0.5)["threshold"] == 0.75          # equal hits: the higher threshold
    assert choose(sweep, 10)["threshold"] == 0.5
    assert choose(sweep[:1], 0.5) is None


def test_calibrate_bad_inputs(tiny_model, tiny_data, tmp_path):
    p = kws("calibrate", "--model", tmp_path / "none.onnx", "--data", tiny_data, check=False)
    assert p.returncode == 2 and "none.onnx" in p.stderr and "Traceback" not in p.stderr
    model = copy_model(tiny_model, tmp_path / "m")
    (tmp_path / "m" / "model.frames.onnx").unlink()
    p = kws("calibrate", "--model", model, "--data", tiny_data, "--minutes", "0.5", check=False)
    assert p.returncode == 2 and "model.frames.onnx" in p.stderr and "Traceback" not in p.stderr
    p = kws("calibrate", "--model", tiny_model, "--data", tiny_data, "--target-fa", "-1", check=False)
    assert p.returncode == 2 and "--target-fa" in p.stderr
