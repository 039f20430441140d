"""Report figures (matplotlib, Agg backend; no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import TABLE_KEYS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curves(ax_loss, ax_acc, histories: dict[str, dict]) -> None:
    for name, hist in histories.items():
        ep = hist.get("epochs") or []
        if not ep:
            continue
        x = [e["epoch"] for e in ep]
        line, = ax_loss.plot(x, [e["train_loss"] for e in ep], label=f"{name} train")
        if "val_loss" in ep[0]:
            ax_loss.plot(x, [e["val_loss"] for e in ep], "--", color=line.get_color(), label=f"{name} val")
            ax_acc.plot(x, [100 * e["val_acc"] for e in ep], "--", color=line.get_color(), label=f"{name} val")
        ax_acc.plot(x, [100 * e["train_acc"] for e in ep], color=line.get_color(), label=f"{name} train")
        if hist.get("best_epoch"):
            ax_acc.axvline(hist["best_epoch"], color=line.get_color(), lw=0.8, alpha=0.5)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="training curves: loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy (vertical line: kept epoch)")
    for ax in (ax_loss, ax_acc):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)


def avqa_figure(tables: dict[str, dict], histories: dict[str, dict], path: str | Path) -> Path:
    """Per-type accuracy bars (one colour per method) above the training curves."""
    plt = _plt()
    fig = plt.figure(figsize=(13, 8))
    ax = fig.add_subplot(2, 1, 1)
    keys = list(TABLE_KEYS)
    x = np.arange(len(keys))
    width = 0.8 / max(len(tables), 1)
    for i, (name, table) in enumerate(tables.items()):
        vals = [100 * table[k]["accuracy"] if table[k]["accuracy"] is not None else np.nan for k in keys]
        ax.bar(x + (i - (len(tables) - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(x, [k.replace("Audio-Visual", "AV").replace("/", "\n") for k in keys], fontsize=8)
    for sep in (8.5, 11.5):  # types | group averages | All
        ax.axvline(sep, color="grey", lw=0.8)
    ax.set(ylabel="accuracy (%)", ylim=(0, 100),
           title="MUSIC-AVQA accuracy per question type (no bar: no question of that type)")
    ax.legend(fontsize=8)
    _curves(fig.add_subplot(2, 2, 3), fig.add_subplot(2, 2, 4), histories)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def classify_figure(metrics: dict, history: dict, path: str | Path, name: str = "head") -> Path:
    """Per-class accuracy bars above the training curves."""
    plt = _plt()
    fig = plt.figure(figsize=(11, 7))
    ax = fig.add_subplot(2, 1, 1)
    labels = list(metrics["per_class"])
    vals = [100 * (metrics["per_class"][k]["accuracy"] or 0.0) for k in labels]
    ax.bar(np.arange(len(labels)), vals)
    ax.set_xticks(np.arange(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    overall = 100 * (metrics["accuracy"] or 0.0)
    ax.set(ylabel="accuracy (%)", ylim=(0, 100), title=f"per-class accuracy (overall {overall:.1f}%)")
    _curves(fig.add_subplot(2, 2, 3), fig.add_subplot(2, 2, 4), {name: history})
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
