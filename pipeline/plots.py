"""Pictures people would rather look at than numbers: training curves, confusion matrix, DET curve.

matplotlib with the non-interactive Agg backend, imported lazily (it is not on the device path).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch (train and validation)."""
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["train_loss"] for h in history], label="train")
    a.plot(ep, [h["val_loss"] for h in history], label="validation")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(), a.grid(alpha=0.3)
    b.plot(ep, [h["train_acc"] for h in history], label="train (augmented)")
    b.plot(ep, [h["val_acc"] for h in history], label="validation")
    b.set_xlabel("epoch"), b.set_ylabel("accuracy"), b.legend(), b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, labels: list[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix (rows: true label, columns: predicted), counts annotated."""
    plt = _plt()
    n = len(labels)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * n + 2), max(5, 0.45 * n + 1.5)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90), ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted"), ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_det(fa_per_hour: list[float], miss: list[float], path: Path, title: str = "") -> None:
    """DET-style curve: false accepts per hour against miss rate, one point per threshold."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(fa_per_hour, miss, marker=".")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("false accepts per hour"), ax.set_ylabel("miss rate"), ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_loss(losses: list[float], path: Path, title: str = "") -> None:
    """Training loss per epoch (`kws train-head`: the head's loss over the embedded copies)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, len(losses) + 1), losses)
    ax.set_xlabel("epoch"), ax.set_ylabel("loss"), ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
