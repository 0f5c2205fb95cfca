#!/usr/bin/env python
"""Recompute a run's streaming thresholds (RUN/thresholds.json) from its validation split with the
current rule (pipeline.device_clips.thresholds_from_validation), without retraining; re-export afterwards.

    python scripts/rethreshold.py runs/default --data data/synth && kws export runs/default --int8
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.checkpoint import load_model  # noqa: E402
from pipeline.data import prepare  # noqa: E402
from pipeline.features import MFCC  # noqa: E402
from pipeline.device_clips import DeviceClips, predict_probs, thresholds_from_validation  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("run", type=Path)
ap.add_argument("--data", type=Path, nargs="+", required=True)
ap.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
a = ap.parse_args()
cfg, model = load_model(a.run)
data = prepare(a.data, cfg.features, cfg.train, a.cache_dir, labels=cfg.labels)
val = DeviceClips(data.splits["val"].audio, data.splits["val"].labels, torch.device("cpu"))
th = thresholds_from_validation(predict_probs(model, MFCC(cfg.features), val, 512), val.labels.numpy(), cfg.labels)
(a.run / "thresholds.json").write_text(json.dumps(th, indent=1))
print(th)
