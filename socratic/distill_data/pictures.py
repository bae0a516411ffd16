"""Pictures of a distillation: the distilled images beside their initialisation, and the matching loss."""

from __future__ import annotations

from pathlib import Path

import torch


def _to_pixels(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (images * s + m).clamp(0, 1)


def save_image_grid(distilled: torch.Tensor, initial: torch.Tensor, mean: tuple[float, ...],
                    std: tuple[float, ...], path: str | Path, count: int = 40, columns: int = 10) -> Path:
    """A PNG of the first `count` distilled images (top rows) above their initialisation (bottom rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, distilled.shape[0])
    rows = -(-count // columns)
    fig, axes = plt.subplots(2 * rows, columns, figsize=(columns * 1.0, 2 * rows * 1.05 + 0.4), squeeze=False)
    for part, images in enumerate((distilled, initial)):
        pixels = _to_pixels(images[:count].float(), mean, std)
        for i in range(rows * columns):
            ax = axes[part * rows + i // columns][i % columns]
            ax.axis("off")
            if i < count:
                img = pixels[i].permute(1, 2, 0).numpy()
                ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray" if img.shape[2] == 1 else None)
        axes[part * rows][0].set_title("distilled" if part == 0 else "initialisation", fontsize=8, loc="left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_match_loss(losses: list[float], path: str | Path, window: int = 20) -> Path:
    """The per-iteration matching loss and its running mean over `window` iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = torch.tensor(losses, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), values.numpy(), alpha=0.35, lw=0.8, label="per iteration")
    if len(losses) >= window:
        smooth = values.unfold(0, window, 1).mean(1)
        ax.plot(range(window, len(losses) + 1), smooth.numpy(), lw=1.5, label=f"mean of {window}")
    ax.axhline(1.0, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("‖θ_N − θ*‖² / ‖θ_t − θ*‖²")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
