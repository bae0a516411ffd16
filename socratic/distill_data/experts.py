"""Stage `experts`: K ConvNet students trained by MSE to the teacher's representations (no augmentation, SGD),
each recording its flattened parameters at initialisation and after every epoch (`experts/expert_<k>.pt`:
an (E + 1) x P `trajectory`). One run epoch trains one whole expert, so a resume restarts at an expert boundary.
MKDT §B.2 (Joshi et al., ICLR 2025), after MTT's `buffer.py` (Cazenavette et al., CVPR 2022)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from socratic.data import TensorLoader
from socratic.data.loader import derive_seed
from socratic.distill_data.inputs import PretrainingSet
from socratic.distill_data.losses import representation_mse
from socratic.distill_data.stage import StageRun
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.run import NonFiniteLossError, StepProgress
from socratic.models import create_model


def expert_path(folder: Path, index: int) -> Path:
    return folder / "experts" / f"expert_{index:03d}.pt"


def expert_files(folder: Path) -> list[Path]:
    return sorted((folder / "experts").glob("expert_*.pt"))


def build_student(cfg: Any, in_channels: int, out_dim: int, seed: int) -> nn.Module:
    """A fresh student ConvNet whose output regresses the `out_dim`-d representation, initialised from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(cfg.student.name, num_classes=out_dim, in_channels=in_channels, **cfg.student.kwargs)


class ExpertRecorder:
    """Flattened parameters at initialisation and after each epoch (`record`), stacked into a trajectory."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.snapshots: list[torch.Tensor] = []

    def record(self) -> None:
        self.snapshots.append(nn.utils.parameters_to_vector(self.model.parameters()).detach().cpu().clone())

    def trajectory(self) -> torch.Tensor:
        return torch.stack(self.snapshots)


def train_expert(model: nn.Module, loader: TensorLoader, targets: torch.Tensor, epochs: int, lr: float,
                 momentum: float, weight_decay: float, steps: StepProgress | None = None) -> torch.Tensor:
    """Train `model` by MSE to `targets[indices]` (the loader yields image indices as labels) and return its
    (epochs + 1) x P trajectory."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    recorder = ExpertRecorder(model)
    recorder.record()
    model.train()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, idx in loader:
            loss = representation_mse(model(x), targets[idx])
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"experts: non-finite MSE in expert epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if steps is not None:
                steps.step(loss.item(), count=len(x))
        recorder.record()
    return recorder.trajectory()


class ExpertsRun(StageRun):
    """One run epoch per expert: expert k (seeded by (seed, k)) is trained and its trajectory written."""

    stage = "experts"

    def __init__(self, cfg: Any, folder: Any, data: PretrainingSet, targets: torch.Tensor, *,
                 device: torch.device, **kwargs: Any) -> None:
        super().__init__(cfg, folder, epochs=cfg.experts.num_experts, device=device, **kwargs)
        self.data, self.targets = data, targets.to(device)

    def stage_epoch(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        e = self.cfg.experts
        seed = derive_seed(self.cfg.seed, epoch)
        model = build_student(self.cfg, self.data.dataset.image_shape[0], self.targets.shape[1], seed).to(self.device)
        loader = TensorLoader(self.data.indexed(), e.batch_size, shuffle=True, seed=seed, device=self.device)
        steps.start(len(loader) * e.epochs, unit="img", description=f"expert {epoch}/{self.epochs}")
        trajectory = train_expert(model, loader, self.targets, e.epochs, e.lr, e.momentum, e.weight_decay, steps)
        if self.is_main:
            save_checkpoint({"trajectory": trajectory, "expert": epoch}, expert_path(self.run_dir, epoch - 1))
        with torch.no_grad():
            model.eval()
            final = float(sum(representation_mse(model(x), self.targets[i]) * len(x) for x, i in
                              TensorLoader(self.data.indexed(), self.cfg.data.eval_batch_size, device=self.device))
                          / len(self.data))
        return {"final_mse": final, "parameters": int(trajectory.shape[1]), "checkpoints": int(trajectory.shape[0])}

    def summary(self, history: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
        return {**super().summary(history, wall_time), "experts": len(expert_files(self.run_dir)),
                "final_mse": [m["final_mse"] for m in history]}

    def epoch_line(self, metrics: dict[str, Any]) -> str | None:
        return f"expert {metrics['epoch']}: MSE to the teacher {metrics['final_mse']:.4g}"
