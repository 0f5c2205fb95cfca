"""Checkpoints: one plain dict, written atomically, loaded with ``weights_only=True``.

    {"model", "optimizer", "config", "labels", "epoch", "best_val_acc", "history", "rng"}

``save_checkpoint`` writes to a temporary file in the same folder and renames it over the target,
so a run killed mid-write leaves the previous checkpoint intact. RNG states are stored as tensors
and plain lists so the file loads without unpickling arbitrary objects.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig
from .errors import CheckpointError, ConfigError
from .model import BiLSTMClassifier


def _plain_rng(st: dict) -> dict:
    out = {"torch": st["torch"]}
    name, keys, pos, has_gauss, gauss = st["numpy"]
    out["numpy"] = [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)]
    version, internal, g = st["python"]
    out["python"] = [version, list(internal), g]
    if "cuda" in st:
        out["cuda"] = st["cuda"]
    return out


def _restore_rng(st: dict) -> dict:
    name, keys, pos, has_gauss, gauss = st["numpy"]
    version, internal, g = st["python"]
    out = {"torch": st["torch"], "numpy": (name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss),
           "python": (version, tuple(internal), g)}
    if "cuda" in st:
        out["cuda"] = st["cuda"]
    return out


def save_checkpoint(state: dict, path: Path) -> None:
    path = Path(path)
    state = dict(state)
    if "rng" in state:
        state["rng"] = _plain_rng(state["rng"])
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, expect: RunConfig | None = None) -> dict:
    """Load ``path``; with ``expect``, refuse a checkpoint whose labels, features or model differ."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        ck["run_config"] = RunConfig.from_dict(ck["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except Exception as e:
        raise CheckpointError(f"{path}: not a kws checkpoint ({type(e).__name__})") from None
    if "rng" in ck:
        ck["rng"] = _restore_rng(ck["rng"])
    if expect is not None:
        got: RunConfig = ck["run_config"]
        for part in ("labels", "features", "model"):
            if getattr(got, part) != getattr(expect, part):
                raise CheckpointError(f"{path}: checkpoint from another config ({part} differ: "
                                      f"saved {getattr(got, part)}, asked {getattr(expect, part)})")
    return ck


def load_model(path: Path) -> tuple[RunConfig, BiLSTMClassifier]:
    """A run folder (its best.pt) or a .pt file -> (config, classifier in eval mode on CPU)."""
    ck = load_checkpoint(path)
    cfg: RunConfig = ck["run_config"]
    model = BiLSTMClassifier(cfg.model)
    model.load_state_dict(ck["model"])
    return cfg, model.eval()
