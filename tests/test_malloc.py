"""glibc allocator tuning for CPU training (pipeline/malloc.py): a training step stops re-mapping
and zero-filling its big tensors every step. Counted in page faults (a count, not a time), each
case in its own process because the setting is process-wide."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                reason="glibc's mallopt exists only on Linux with glibc")

STEP = r"""
import resource, sys
import numpy as np, torch
from pipeline.config import AugmentConfig, FeatureConfig, ModelConfig, TrainConfig
from pipeline.datasets.augment import Augmenter
from pipeline.datasets.noise import synthetic_noises
from pipeline.features import MFCC
from pipeline.malloc import keep_freed_memory
from pipeline.model import BiLSTMClassifier
from pipeline.train_step import TrainStep, make_optimizer
tuned = keep_freed_memory()
torch.manual_seed(0)
feats, bs = FeatureConfig(), 64
rng = np.random.default_rng(0)
x = torch.from_numpy((rng.standard_normal((bs, feats.clip_samples)) * 0.1).astype(np.float32))
y = torch.from_numpy(rng.integers(0, 22, bs))
tc = TrainConfig(batch_size=bs)
model = BiLSTMClassifier(ModelConfig())
step = TrainStep(model, model, MFCC(feats), Augmenter(AugmentConfig(), feats,
                 list(synthetic_noises(feats.sample_rate, 5.0, 0).values()), "cpu"),
                 make_optimizer(model, tc, torch.device("cpu")), tc, torch.device("cpu"), amp=False)
for _ in range(4):                   # the heap reaches its working size
    step(x, y)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step(x, y)
print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 4)
"""


def _run(code: str, **env: str) -> str:
    e = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "KWS_GLIBC_TUNING"}
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=dict(e, **env))
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def test_training_step_page_faults_drop_with_the_tuning():
    tuned, faults = _run(STEP)
    off, faults_off = _run(STEP, KWS_GLIBC_TUNING="0")
    assert (tuned, off) == ("True", "False")
    # measured here: about 30,000 page faults per step at batch 64 with glibc's defaults, none tuned
    assert float(faults) < 0.1 * float(faults_off), (faults, faults_off)


@pytest.mark.parametrize("env", [{"KWS_GLIBC_TUNING": "0"}, {"MALLOC_ARENA_MAX": "2"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"}])
def test_a_users_own_allocator_settings_are_left_alone(env):
    assert _run("from pipeline.malloc import keep_freed_memory; print(keep_freed_memory())", **env) == ["False"]


def test_tuned_once_per_process():
    code = "from pipeline.malloc import keep_freed_memory as k; print(k(), k())"
    assert _run(code) == ["True", "True"]
