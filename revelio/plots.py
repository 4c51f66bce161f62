"""Pictures (matplotlib Figures, no pyplot: the user's backend is left alone): grid heatmaps, training curves, sample grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from revelio.storage.files import write_atomic


def grid_heatmap(
    values: dict[tuple[str, int], float], hooks: Sequence[str], timesteps: Sequence[int], title: str, path: Path,
    colorbar_label: str = "test accuracy", best: str = "max",
) -> Path:
    """A hooks x timesteps heatmap with every cell's value written in it and the best one boxed."""
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone
    from matplotlib.patches import Rectangle

    grid = np.full((len(hooks), len(timesteps)), np.nan)
    for (hook, t), value in values.items():
        grid[list(hooks).index(hook), list(timesteps).index(t)] = value
    fig = Figure(figsize=(1.4 + 1.1 * len(timesteps), 1.0 + 0.5 * len(hooks)))
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(timesteps)), [f"t={t}" for t in timesteps])
    ax.set_yticks(range(len(hooks)), hooks)
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white" if value < np.nanmean(grid) else "black", fontsize=8)
    if not np.all(np.isnan(grid)):
        i, j = np.unravel_index(np.nanargmax(grid) if best == "max" else np.nanargmin(grid), grid.shape)
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    fig.colorbar(image, ax=ax, label=colorbar_label)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def training_curves(log_path: Path, out_path: Path) -> None:
    """Normalized MSE, L0 and dead fraction against training tokens, from a trainer's JSONL log."""
    import json

    from matplotlib.figure import Figure

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    tokens = [r["tokens"] for r in rows]
    fig = Figure(figsize=(12, 3.2))
    axes = fig.subplots(1, 3)
    for ax, key, title in zip(axes, ("normalized_mse", "l0", "dead_fraction"), ("normalized MSE", "L0", "dead fraction")):
        ax.plot(tokens, [r[key] for r in rows])
        ax.set_title(title)
        ax.set_xlabel("training tokens")
    axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)


def sample_grid(samples: np.ndarray, class_names: Sequence[str], columns: int, path: Path) -> Path:
    """One labelled row per class of ``samples`` ([classes, columns, C, H, W] in [0, 1]), as a PNG."""
    from matplotlib.figure import Figure


    rows = len(class_names)
    figure = Figure(figsize=(columns * 0.6 + 1.4, rows * 0.6))
    axes = figure.subplots(rows, columns, squeeze=False)
    for c, name in enumerate(class_names):
        for i in range(columns):
            ax = axes[c][i]
            image = samples[c, i].transpose(1, 2, 0)
            image = image[..., 0] if image.shape[-1] == 1 else image
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[c][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    figure.subplots_adjust(left=0.16, right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.05)
    write_atomic(path, lambda temporary: figure.savefig(temporary, format="png", dpi=80))
    return path
