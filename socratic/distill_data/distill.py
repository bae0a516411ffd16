"""Stage `distill`: MKDT's trajectory matching (§B.4; Joshi, Ni & Mirzasoleiman, ICLR 2025, after MTT).

The synthetic set -- images initialised from real examples (the high-loss ones, or a random subset), their
target representations (initialised from the teacher's) and the inner step size α -- is learned by three SGD
optimisers (momentum 0.5; `distill.lr_img`, `lr_labels`, `lr_lr`). Iteration i: expert k (the experts in a
shuffled order, reshuffled after every pass), start epoch t ~ U{0, .., max_start_epoch - 1}; the student starts at
θ_t, takes N = `syn_steps` SGD steps of MSE on minibatches of `batch_syn` synthetic examples, and the loss is
‖θ_N − θ_{t+M}‖² / ‖θ_t − θ_{t+M}‖². Every draw of iteration i comes from a generator seeded by (seed, i), so a
resumed run repeats the iterations exactly. `distilled.pt` (images, targets, syn_lr, per-iteration losses) is
written after every run epoch (`iterations_per_epoch` iterations); after the last, `distilled.png` and
`match_loss.png`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from socratic.data.loader import derive_seed
from socratic.distill_data.matching import FlatModel, meta_gradient, minibatches
from socratic.distill_data.stage import StageRun
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.run import NonFiniteLossError, StepProgress

DISTILLED = "distilled.pt"


def load_trajectory(path: Path) -> torch.Tensor:
    """An expert's (E + 1) x P trajectory, memory-mapped (only the two rows an iteration uses are read)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["trajectory"]


def iteration_draws(seed: int, iteration: int, num_experts: int, max_start_epoch: int, n_syn: int,
                    batch_syn: int, steps: int) -> tuple[int, int, list[torch.Tensor]]:
    """(expert index, start epoch, the N index batches) of 0-based `iteration`: a pure function of its arguments."""
    cycle, position = divmod(iteration, num_experts)
    order = torch.randperm(num_experts, generator=torch.Generator().manual_seed(derive_seed(seed, cycle, 7)))
    g = torch.Generator().manual_seed(derive_seed(seed, iteration, 8))
    start = int(torch.randint(0, max_start_epoch, (1,), generator=g))
    return int(order[position]), start, minibatches(n_syn, batch_syn, steps, g)


class DistillRun(StageRun):
    """Run epochs of `iterations_per_epoch` matching iterations over (images, targets, syn_lr)."""

    stage = "distill"

    def __init__(self, cfg: Any, folder: Any, images: torch.Tensor, targets: torch.Tensor, init_indices: torch.Tensor,
                 experts: list[Path], flat: FlatModel, *, device: torch.device, mean: tuple[float, ...],
                 std: tuple[float, ...], **kwargs: Any) -> None:
        d = cfg.distill
        super().__init__(cfg, folder, epochs=d.iterations // d.iterations_per_epoch, device=device, **kwargs)
        self.experts, self.flat, self.mean, self.std = experts, flat, mean, std
        self.init_images = images.cpu().clone()
        self.init_indices = init_indices
        self.images = images.to(device).clone().requires_grad_(True)
        self.targets = targets.to(device).clone().requires_grad_(True)
        self.syn_lr = torch.tensor(d.syn_lr, device=device).requires_grad_(True)
        self.optimizers = {
            "images": torch.optim.SGD([self.images], lr=d.lr_img, momentum=d.momentum),
            "targets": torch.optim.SGD([self.targets], lr=d.lr_labels, momentum=d.momentum),
            "lr": torch.optim.SGD([self.syn_lr], lr=d.lr_lr, momentum=d.momentum),
        }
        self.losses: list[float] = []

    def iteration(self, i: int) -> float:
        d = self.cfg.distill
        k, t, batches = iteration_draws(self.cfg.seed, i, len(self.experts), d.max_start_epoch, len(self.images),
                                        d.batch_syn, d.syn_steps)
        trajectory = load_trajectory(self.experts[k])
        theta_start = trajectory[t].to(self.device)
        theta_target = trajectory[t + d.expert_epochs].to(self.device)
        batches = [b.to(self.device) for b in batches]
        result = meta_gradient(d.meta_grad, self.flat, theta_start, theta_target, self.images, self.targets,
                               self.syn_lr, batches)
        loss = float(result.loss)
        grads = (result.images, result.targets, result.lr)
        if not all(bool(torch.isfinite(g).all()) for g in grads) or loss != loss:
            raise NonFiniteLossError(f"distill: non-finite matching loss or meta-gradient at iteration {i + 1}")
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        self.images.grad, self.targets.grad, self.syn_lr.grad = grads
        for optimizer in self.optimizers.values():
            optimizer.step()
        return loss

    def stage_epoch(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        per_epoch = self.cfg.distill.iterations_per_epoch
        steps.start(per_epoch, unit="it")
        first = (epoch - 1) * per_epoch
        start = time.perf_counter()
        losses = []
        for i in range(first, first + per_epoch):
            losses.append(self.iteration(i))
            steps.step(losses[-1], count=1)
        self.losses = self.losses[:first] + losses
        seconds = (time.perf_counter() - start) / per_epoch
        if self.is_main:
            save_checkpoint(self.distilled(), self.run_dir / DISTILLED)
        return {"match_loss": sum(losses) / len(losses), "syn_lr": self.syn_lr.item(), "iteration_time": seconds,
                "iterations": first + per_epoch}

    def distilled(self) -> dict[str, Any]:
        return {"images": self.images.detach().cpu(), "targets": self.targets.detach().cpu(),
                "syn_lr": self.syn_lr.item(), "losses": torch.tensor(self.losses),
                "init_indices": self.init_indices, "mean": list(self.mean), "std": list(self.std)}

    def evaluate(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any] | None:
        if epoch == self.epochs and self.is_main:
            from socratic.distill_data.pictures import plot_match_loss, save_image_grid

            save_image_grid(self.images.detach().cpu(), self.init_images, self.mean, self.std,
                            self.run_dir / "distilled.png")
            plot_match_loss(self.losses, self.run_dir / "match_loss.png")
        return None

    def state_dict(self) -> dict[str, Any]:
        return {**self.distilled(), "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.images.copy_(state["images"])
            self.targets.copy_(state["targets"])
            self.syn_lr.fill_(float(state["syn_lr"]))
        for key, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
        self.losses = [float(v) for v in state["losses"]]

    def summary(self, history: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
        first = self.losses[: self.cfg.distill.iterations_per_epoch]
        return {**super().summary(history, wall_time), "iterations": len(self.losses),
                "match_loss_first_epoch": sum(first) / max(len(first), 1),
                "match_loss_last_epoch": history[-1]["match_loss"] if history else None,
                "syn_lr": self.syn_lr.item(), "images": int(self.images.shape[0])}

    def epoch_line(self, metrics: dict[str, Any]) -> str | None:
        return (f"distill iteration {metrics['iterations']}: matching loss {metrics['match_loss']:.4f}, "
                f"syn_lr {metrics['syn_lr']:.4g}, {metrics['iteration_time']:.2f} s/it")
