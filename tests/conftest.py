"""Shared fixtures: a tiny synthetic dataset, a small model trained on it, and its ONNX export.

Everything goes through the real `kws` command line (the same path a user takes), once per test
session: synthesise 3 words with espeak-ng and flite voices, train a small BiLSTM on the CPU for a
few epochs, export it. Takes about a minute on 2 cores.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
WORDS = ("yes", "no", "stop")


def kws(*args: str, check: bool = True, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m pipeline.cli ARGS` and return the completed process (text mode)."""
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    p = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                       cwd=REPO, env=e, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"kws {' '.join(map(str, args))} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def requires_cuda():
    import torch
    return pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    out = tmp_path_factory.mktemp("data") / "tiny"
    kws("synth", "--out", out, "--words", ",".join(WORDS), "--engines", "espeak,flite", "--max-speakers", "40",
        "--takes", "3", "--unknown-per-speaker", "3", "--jobs", "2")
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    cache = tmp_path_factory.mktemp("cache")
    kws("train", "--data", tiny_data, "--out", run, "--epochs", "14", "--hidden", "48", "--mfcc-tower", "32", "--layers", "2",
        "--batch-size", "32", "--lr", "5e-3", "--cache-dir", cache, "--device", "cpu", "--jobs", "2")
    return run


@pytest.fixture(scope="session")
def tiny_model(tiny_run) -> Path:
    kws("export", tiny_run, "--int8")
    return tiny_run / "model.onnx"


@pytest.fixture(scope="session")
def real_clips(tiny_data) -> list[Path]:
    """A few real wav files of the test split (one per word where possible)."""
    lines = (tiny_data / "testing_list.txt").read_text().split()
    picked = {}
    for rel in lines:
        picked.setdefault(rel.split("/")[0], tiny_data / rel)
    return list(picked.values())[:6]


def write_tone(path: Path, sr: int = 16000, seconds: float = 1.0, channels: int = 1, subtype: str = "PCM_16") -> Path:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    sf.write(path, x, sr, subtype=subtype)
    return path
