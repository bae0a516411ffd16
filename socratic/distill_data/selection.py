"""Stage `select`: MKDT's high-loss initialisation (§B.3). Each example's MSE to its teacher representation
under every expert's parameters after `select.epoch` epochs (the authors: epoch 1), averaged over the experts;
the indices of the top p % (highest loss first) are saved per fraction in `high_loss.pt`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from socratic.distill_data.config import percent
from socratic.distill_data.inputs import PretrainingSet, read_tensors
from socratic.distill_data.losses import per_example_mse
from socratic.distill_data.matching import FlatModel
from socratic.distill_data.stage import StageRun
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.run import StepProgress

HIGH_LOSS = "high_loss.pt"


def top_fraction(losses: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the round(fraction * N) largest losses (at least one), largest first; ties by lower index."""
    count = max(1, round(fraction * losses.numel()))
    order = torch.sort(losses, descending=True, stable=True).indices
    return order[:count]


@torch.no_grad()
def per_example_losses(flat: FlatModel, theta: torch.Tensor, images: torch.Tensor, targets: torch.Tensor,
                       batch_size: int) -> torch.Tensor:
    """(N,) MSE of every example under the parameters `theta`."""
    return torch.cat([per_example_mse(flat(theta, x), y)
                      for x, y in zip(images.split(batch_size), targets.split(batch_size))])


class SelectRun(StageRun):
    """One epoch: the average per-example loss over the experts, and the top fractions."""

    stage = "select"

    def __init__(self, cfg: Any, folder: Any, data: PretrainingSet, targets: torch.Tensor, experts: list[Path],
                 flat: FlatModel, *, device: torch.device, **kwargs: Any) -> None:
        super().__init__(cfg, folder, epochs=1, device=device, **kwargs)
        self.data, self.targets, self.experts, self.flat = data, targets.to(device), experts, flat

    def stage_epoch(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        images = self.data.normalised(self.device)
        steps.start(len(self.experts), unit="expert")
        total = torch.zeros(len(self.data), device=self.device)
        for path in self.experts:
            theta = read_tensors(path)["trajectory"][self.cfg.select.epoch].to(self.device)
            total += per_example_losses(self.flat, theta, images, self.targets, self.cfg.data.eval_batch_size)
            steps.step()
        losses = (total / len(self.experts)).cpu()
        indices = {percent(f): top_fraction(losses, f) for f in self.cfg.select.fractions}
        if self.is_main:
            save_checkpoint({"losses": losses, "indices": indices, "pretraining_indices": self.data.indices,
                             "epoch": self.cfg.select.epoch, "experts": len(self.experts)}, self.run_dir / HIGH_LOSS)
        return {"mean_loss": float(losses.mean()),
                **{f"threshold_{k}": float(losses[v[-1]]) for k, v in indices.items()}}
