"""`kws train --teacher RUN ...`: a student learns the teachers' averaged probabilities as well as the labels."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import kws
from pipeline.audio import load_clip
from pipeline.checkpoint import load_checkpoint, load_model, save_checkpoint
from pipeline.distill import Teacher
from pipeline.features import MFCC


def teacher_for(run, **train):
    cfg, _ = load_model(run)
    return Teacher(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, teachers=(str(run),), **train)),
                   torch.device("cpu"), amp=False)


def test_loss_mixes_labels_and_soft_targets(tiny_run):
    torch.manual_seed(0)
    student, teacher, hard = torch.randn(8, 5), torch.randn(8, 5), torch.tensor(1.7)
    assert torch.isclose(teacher_for(tiny_run, distill_weight=0.0).loss(student, teacher, hard), hard)
    t1 = teacher_for(tiny_run, distill_weight=1.0, distill_temperature=2.0)
    assert t1.loss(teacher, teacher, hard).abs() < 1e-6                  # nothing to learn from itself
    s = student.clone().requires_grad_(True)                               # descending moves toward the teacher
    before = t1.loss(s, teacher, hard)
    before.backward()
    after = t1.loss(student - 0.5 * s.grad, teacher, hard)
    assert after < before
    half = teacher_for(tiny_run, distill_weight=0.5, distill_temperature=2.0).loss(student, teacher, hard)
    assert torch.isclose(half, 0.5 * hard + 0.5 * t1.loss(student, teacher, hard))


def test_teacher_scores_like_the_exported_model(tiny_run, real_clips):
    cfg, clf = load_model(tiny_run)
    x = torch.from_numpy(np.stack([load_clip(p, 16000, 16000) for p in real_clips]))
    feats = MFCC(cfg.features)(x)
    got = torch.softmax(teacher_for(tiny_run).logits(feats), -1)
    assert torch.allclose(got, torch.softmax(clf(feats), -1), atol=1e-5)


def test_student_learns_from_the_teacher_alone(tiny_run, tiny_data, real_clips, tmp_path):
    run = tmp_path / "student"
    kws("train", "--data", tiny_data, "--out", run, "--epochs", "6", "--hidden", "32", "--mfcc-tower", "0", "--layers", "1",
        "--batch-size", "32", "--lr", "5e-3", "--teacher", tiny_run, "--set", "train.distill_weight=1.0",
        "--cache-dir", tmp_path / "cache", "--device", "cpu", "--jobs", "2")
    cfg, student = load_model(run)
    assert cfg.train.teachers == (str(tiny_run),) and cfg.train.distill_weight == 1.0
    _, teacher = load_model(tiny_run)
    lines = (tiny_data / "testing_list.txt").read_text().split()
    x = torch.from_numpy(np.stack([load_clip(tiny_data / rel, 16000, 16000) for rel in lines]))
    with torch.no_grad():
        feats = MFCC(cfg.features)(x)
        agree = (student(feats).argmax(-1) == teacher(feats).argmax(-1)).float().mean().item()
    assert agree > 0.6, agree                                              # 1/5 by chance


def test_teacher_with_another_front_end_is_a_one_line_error(tiny_run, tiny_data, tmp_path):
    ck = load_checkpoint(tiny_run / "best.pt")
    cfg = json.loads(ck["run_config"].to_json())
    cfg["features"]["f_min"] = 300.0
    save_checkpoint({"model": ck["model"], "config": cfg, "labels": cfg["labels"], "epoch": 1, "best_val_acc": 0.0},
                    tmp_path / "other.pt")
    p = kws("train", "--data", tiny_data, "--out", tmp_path / "r", "--epochs", "1", "--teacher", tmp_path / "other.pt",
            "--cache-dir", tmp_path / "cache", "--device", "cpu", "--jobs", "1", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    line, = p.stderr.strip().splitlines()
    assert line.startswith(f"kws: error: --teacher {tmp_path / 'other.pt'}") and "f_min" in line, line
    assert not (tmp_path / "r" / "best.pt").exists()


@pytest.mark.parametrize("bad", ["train.distill_weight=1.5", "train.distill_temperature=0"])
def test_bad_distillation_settings(bad, tmp_path):
    p = kws("train", "--data", tmp_path, "--out", tmp_path / "r", "--set", bad, check=False)
    assert p.returncode == 2 and bad.split("=")[0] in p.stderr and "Traceback" not in p.stderr
