"""Resume after a kill, multi-process training through torchrun (gloo, 2 CPU processes). GPU tests: test_gpu.py."""
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
    args = ["train", "--data", tiny_data, "--out", run, "--epochs", "3", "--hidden", "16", "--mfcc-tower", "8", "--layers", "1",
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
           "train", "--data", str(tiny_data), "--out", str(run), "--epochs", "1", "--hidden", "16", "--mfcc-tower", "8",
           "--layers", "1", "--batch-size", "16", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--jobs", "1"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "x2" in p.stdout                                  # the model line names the world size
    ck = torch.load(run / "best.pt", weights_only=True)
    assert ck["epoch"] == 1 and not any(k.startswith("module.") for k in ck["model"])


def test_train_step_relabels_cut_words_as_unknown():
    """Keyword clips cut to a fragment at the window edge train as _unknown_; other clips keep their label."""
    from pipeline.config import AugmentConfig, FeatureConfig, ModelConfig, TrainConfig
    from pipeline.datasets.augment import Augmenter
    from pipeline.features import MFCC
    from pipeline.model import BiLSTMClassifier
    from pipeline.train_step import TrainStep

    torch.manual_seed(0)
    feats = FeatureConfig()
    tc = TrainConfig(augment=AugmentConfig(free_position=True, partial_word_prob=1.0, noise_prob=0.0))
    model = BiLSTMClassifier(ModelConfig(hidden=8, layers=1, n_classes=4, mfcc_tower=0))    # labels: a, b, _silence_, _unknown_
    step = TrainStep(model, model, MFCC(feats), Augmenter(tc.augment, feats, [], "cpu"),
                     torch.optim.AdamW(model.parameters()), tc, torch.device("cpu"), amp=False,
                     unknown_index=3, keyword_mask=torch.tensor([True, True, False, False]))
    x = torch.zeros(8, 16000)
    x[:, 6000:10000] = 0.3 * torch.sin(torch.arange(4000) * 0.1)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    loss, logits, y2 = step(x, y)
    assert torch.isfinite(loss) and logits.shape == (8, 4)
    assert y2.tolist() == [3, 3, 2, 3, 3, 3, 2, 3]


def test_train_step_with_mixup_and_time_warp():
    """Mixup's loss is lam * CE(own label) + (1 - lam) * CE(partner's): with one label for the whole
    batch that is the plain cross-entropy of the returned logits, whatever lam; with two labels
    mixed it is not (soft targets)."""
    import torch.nn.functional as F
    from pipeline.config import AugmentConfig, FeatureConfig, ModelConfig, TrainConfig
    from pipeline.datasets.augment import Augmenter
    from pipeline.features import MFCC
    from pipeline.model import BiLSTMClassifier
    from pipeline.train_step import TrainStep

    torch.manual_seed(0)
    feats = FeatureConfig()
    tc = TrainConfig(mixup_alpha=0.4, label_smoothing=0.0, augment=AugmentConfig(time_warp_frames=5, noise_prob=0.0))
    model = BiLSTMClassifier(ModelConfig(hidden=8, layers=1, n_classes=4, mfcc_tower=0))
    step = TrainStep(model, model, MFCC(feats), Augmenter(tc.augment, feats, [], "cpu"),
                     torch.optim.AdamW(model.parameters()), tc, torch.device("cpu"), amp=False)
    x = 0.1 * torch.randn(8, 16000)
    loss, logits, y = step(x, torch.ones(8, dtype=torch.long))
    assert torch.allclose(loss, F.cross_entropy(logits, y), atol=1e-5)
    y2 = torch.tensor([0, 1] * 4)
    loss, logits, _ = step(x, y2)
    assert torch.isfinite(loss) and not torch.allclose(loss, F.cross_entropy(logits, y2), atol=1e-4)


def test_train_step_gives_each_tower_its_own_loss():
    """With two towers the step's loss is the mean of the towers' own cross-entropies (not that of
    their averaged output), its logits are the log of their mean probabilities, and both towers learn."""
    import torch.nn.functional as F
    from pipeline.config import AugmentConfig, FeatureConfig, ModelConfig, TrainConfig
    from pipeline.datasets.augment import Augmenter
    from pipeline.features import MFCC
    from pipeline.model import BiLSTMClassifier
    from pipeline.train_step import TrainStep

    torch.manual_seed(0)
    feats = FeatureConfig()
    aug = AugmentConfig(noise_prob=0.0, time_masks=0, freq_masks=0, speed=(1.0, 1.0), vtlp=(1.0, 1.0), shift_ms=0.0,
                        band_prob=0.0, reverb_prob=0.0, gain_db=(0.0, 0.0), clip_prob=0.0)
    tc = TrainConfig(label_smoothing=0.0, augment=aug)
    model = BiLSTMClassifier(ModelConfig(hidden=8, layers=1, dropout=0.0, conv_channels=2, mfcc_tower=6, n_classes=4))
    step = TrainStep(model, model, MFCC(feats), Augmenter(tc.augment, feats, [], "cpu"),
                     torch.optim.AdamW(model.parameters()), tc, torch.device("cpu"), amp=False)
    x, y = 0.1 * torch.randn(6, 16000), torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.no_grad():
        towers = model(MFCC(feats)(x), towers=True)
    loss, logits, _ = step(x, y)
    assert torch.allclose(loss, (F.cross_entropy(towers[0], y) + F.cross_entropy(towers[1], y)) / 2, atol=1e-5)
    assert torch.allclose(logits.exp(), torch.softmax(towers, -1).mean(0), atol=1e-5)
    assert model.lstm.weight_hh_l0.grad.abs().sum() > 0 and model.lstm2.weight_hh_l0.grad.abs().sum() > 0


def test_weight_ema_follows_the_update_rule():
    """ema <- d * ema + (1 - d) * w with d = min(decay, (1+k)/(10+k)) after the k-th update; buffers copied."""
    from pipeline.config import ModelConfig
    from pipeline.model import BiLSTMClassifier, WeightEMA

    torch.manual_seed(0)
    model = BiLSTMClassifier(ModelConfig(hidden=4, layers=1, n_classes=3, mfcc_tower=0))
    ema = WeightEMA(model, decay=0.5)
    start = [p.detach().clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model.feat_mean.fill_(2.0)
    ema.update(model)                                             # k = 1: d = min(0.5, 2/11)
    d = 2 / 11
    for e, s, p in zip(ema.model.parameters(), start, model.parameters()):
        torch.testing.assert_close(e, d * s + (1 - d) * p, rtol=0, atol=1e-6)
        assert not e.requires_grad
    assert torch.equal(ema.model.feat_mean, model.feat_mean)


def test_ema_run_exports_the_average_and_resumes_from_the_raw_weights(tiny_data, tmp_path):
    run, cache = tmp_path / "ema", tmp_path / "cache"
    common = ["--cache-dir", cache, "--device", "cpu", "--jobs", "1"]
    kws("train", "--data", tiny_data, "--out", run, "--epochs", "2", "--hidden", "16", "--mfcc-tower", "8", "--layers", "1",
        "--batch-size", "32", "--ema-decay", "0.9", *common)
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["config"]["train"]["ema_decay"] == 0.9
    w = "lstm.weight_ih_l0"
    assert not torch.equal(ck["model"][w], ck["train_model"][w])   # the average is not the last step
    # Make it look killed after epoch 1, then resume: training continues from the raw weights.
    ck["epoch"], ck["history"] = 1, ck["history"][:1]
    torch.save(ck, run / "last.pt")
    p = kws("train", "--data", tiny_data, "--out", run, "--resume", *common)
    assert f"resuming {run} after epoch 1" in p.stdout
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2
    kws("export", run)
    assert (run / "model.onnx").is_file()


def test_init_fine_tunes_from_a_checkpoint(tiny_run, tiny_data, tmp_path):
    """--init keeps the checkpoint's words, features, model and normalisation; training flags apply."""
    import shutil
    common = ["--cache-dir", tmp_path / "c", "--device", "cpu", "--jobs", "1"]
    run = tmp_path / "ft"
    p = kws("train", "--data", tiny_data, "--out", run, "--init", tiny_run, "--epochs", "1", "--hidden", "16",
            "--batch-size", "32", *common)
    assert f"fine-tuning from {tiny_run}" in p.stdout
    src = torch.load(tiny_run / "best.pt", weights_only=True)
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["config"]["model"] == src["config"]["model"]            # --hidden 16 does not apply
    assert ck["config"]["labels"] == src["config"]["labels"]
    assert ck["config"]["train"]["lr"] == 1e-3 and ck["config"]["train"]["epochs"] == 1
    assert torch.equal(ck["model"]["feat_mean"], src["model"]["feat_mean"])
    assert not torch.equal(ck["model"]["lstm.weight_ih_l0"], src["model"]["lstm.weight_ih_l0"])
    # data without some of the checkpoint's words, and a missing checkpoint: one line, exit 2
    one = tmp_path / "one"
    word = next(d for d in sorted(tiny_data.iterdir()) if d.is_dir() and not d.name.startswith("_"))
    shutil.copytree(word, one / word.name)
    for args, needle in (([one], "--init"), ([tiny_data, "--init", tmp_path / "none.pt"], "no such checkpoint")):
        p = kws("train", "--data", *args[:1], "--out", tmp_path / "ft2", *(args[1:] or ["--init", tiny_run]),
                *common, check=False)
        assert p.returncode == 2 and "Traceback" not in p.stderr and needle in p.stderr, p.stderr


@pytest.mark.skipif(not os.path.isfile("/proc/cpuinfo"), reason="reads the CPU's flags from /proc/cpuinfo")
def test_auto_precision_is_bf16_only_on_cpus_that_compute_it():
    """oneDNN emulates bf16 on any AVX-512 CPU, 3-4x slower than fp32 there: `--precision auto` must
    pick bf16 only where the CPU has it in hardware (its flags, read here independently of torch)."""
    from pipeline.train_step import use_bf16
    flags = set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    native = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert use_bf16(torch.device("cpu")) == native
    assert use_bf16(torch.device("cpu"), "bf16") and not use_bf16(torch.device("cpu"), "fp32")


def test_budget_epochs():
    from pipeline.train import MIN_BUDGET_EPOCHS, budget_epochs
    assert budget_epochs(40, 600, 30, 20) == 29          # 1 + (600 - 30) // 20
    assert budget_epochs(40, 6000, 30, 20) == 40         # never more than asked
    assert budget_epochs(40, 60, 30, 20) == MIN_BUDGET_EPOCHS == 20
    assert budget_epochs(5, 60, 30, 20) == 5             # fewer asked than the floor
    assert budget_epochs(40, 900, 30, 20, after_epochs=12) == 32     # 1 + (900 - 30 - 240) // 20
    assert budget_epochs(40, 800, 300, 20, done=10) == 35            # re-asked after 10 epochs: 10 + 500 // 20
    assert budget_epochs(40, 8000, 300, 20, done=10) == 40


def test_time_budget_lowers_epochs_and_lays_the_schedule_over_them(tiny_data, tmp_path):
    """`--minutes` too short for 22 epochs: 20 run (the floor), the learning rate decays to its end
    in the 20th, and the checkpoint's config says 20, so --resume and export read the run as it ran."""
    run = tmp_path / "run"
    p = kws("train", "--data", tiny_data, "--out", run, "--epochs", "22", "--minutes", "0.001", "--hidden", "8",
            "--mfcc-tower", "0", "--layers", "1", "--batch-size", "64", "--cache-dir", tmp_path / "cache",
            "--device", "cpu", "--jobs", "2")
    assert "time budget 0.001 min: 20 epochs" in p.stdout
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == list(range(1, 21))
    assert lines[-1]["lr"] < 0.03 * 3e-3           # near the cosine's floor (2% of the peak); 22 epochs: about 4.5% at the 20th
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["epoch"] == 20 and ck["config"]["train"]["epochs"] == 20
