"""The training-curves PNG kept up to date in a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mmapp.atomic import atomic_path


def plot_history(history: Sequence[dict], metric: str, path: str | Path) -> None:
    """Loss per epoch (train) and the validation metric, side by side, written atomically."""
    # heavy: matplotlib, only when a run draws its curves
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(epochs, [h["train"]["loss"] for h in history], marker="o")
    ax_loss.set(title="training loss", xlabel="epoch")
    ax_metric.plot(epochs, [h["val"].get(metric, float("nan")) for h in history], marker="o", color="tab:green")
    ax_metric.set(title=f"validation {metric}", xlabel="epoch")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
