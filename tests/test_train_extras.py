"""Resume after a kill, multi-process training through torchrun (gloo, 2 CPU processes), GPU smoke test."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, kws


def test_resume_continues_a_killed_run(tiny_data, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    args = ["train", "--data", tiny_data, "--out", run, "--epochs", "3", "--hidden", "16", "--layers", "1",
            "--batch-size", "32", "--cache-dir", cache, "--device", "cpu", "--jobs", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    ck = torch.load(run / "last.pt", weights_only=True)           # the atomic write left a whole file
    assert ck["epoch"] >= 1
    p = kws("train", "--data", tiny_data, "--out", run, "--resume", "--cache-dir", cache, "--device", "cpu")
    if killed and ck["epoch"] < 3:
        assert f"resuming {run} after epoch {ck['epoch']}" in p.stdout
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2, 3]
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 3
    assert (run / "curves.png").stat().st_size > 1000 and (run / "thresholds.json").is_file()


def test_torchrun_two_cpu_processes(tiny_data, tmp_path):
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pipeline.cli",
           "train", "--data", str(tiny_data), "--out", str(run), "--epochs", "1", "--hidden", "16", "--layers", "1",
           "--batch-size", "16", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--jobs", "1"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "x2" in p.stdout                                  # the model line names the world size
    ck = torch.load(run / "best.pt", weights_only=True)
    assert ck["epoch"] == 1 and not any(k.startswith("module.") for k in ck["model"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_training_smoke(tiny_data, tmp_path):
    p = kws("train", "--data", tiny_data, "--out", tmp_path / "gpu", "--epochs", "2", "--cache-dir", tmp_path / "c",
            "--device", "cuda")
    assert "device cuda" in p.stdout


def test_train_step_relabels_cut_words_as_unknown():
    """Keyword clips cut to a fragment at the window edge train as _unknown_; other clips keep their label."""
    from pipeline.config import AugmentConfig, FeatureConfig, ModelConfig, TrainConfig
    from pipeline.datasets.augment import Augmenter
    from pipeline.features import MFCC
    from pipeline.model import BiLSTMClassifier
    from pipeline.train import TrainStep

    torch.manual_seed(0)
    feats = FeatureConfig()
    tc = TrainConfig(augment=AugmentConfig(free_position=True, partial_word_prob=1.0, noise_prob=0.0))
    model = BiLSTMClassifier(ModelConfig(hidden=8, layers=1, n_classes=4))    # labels: a, b, _silence_, _unknown_
    step = TrainStep(model, model, MFCC(feats), Augmenter(tc.augment, feats, [], "cpu"),
                     torch.optim.AdamW(model.parameters()), tc, torch.device("cpu"), amp=False,
                     unknown_index=3, keyword_mask=torch.tensor([True, True, False, False]))
    x = torch.zeros(8, 16000)
    x[:, 6000:10000] = 0.3 * torch.sin(torch.arange(4000) * 0.1)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    loss, logits, y2 = step(x, y)
    assert torch.isfinite(loss) and logits.shape == (8, 4)
    assert y2.tolist() == [3, 3, 2, 3, 3, 3, 2, 3]
