"""Stage `eval`: MKDT's evaluation protocol (§B.5). A fresh student ConvNet is pre-trained on a set (the distilled
one, a real subset with its teacher representations, or nothing) by MSE for `eval.pretrain_epochs` epochs at
the learned step size (0.1 for the subsets), SGD momentum 0.9, wd 1e-4, batch 256; its flattened features are
then probed linearly (L-BFGS, CE + 1e-3·‖W‖²) on each labelled fraction of the downstream training set, and the
test top-1 reported. The run's last epoch is the probe epoch: `eval.pretrain_epochs + 1` epochs in all."""

from __future__ import annotations

from typing import Any

import torch

from socratic.data.loader import derive_seed
from socratic.distill_data.experts import build_student
from socratic.distill_data.inputs import load_split
from socratic.distill_data.losses import representation_mse
from socratic.distill_data.probe import probe_accuracies
from socratic.distill_data.stage import ModelStageRun
from socratic.engine.run import NonFiniteLossError, StepProgress


class EvalRun(ModelStageRun):
    """Pre-training epochs on (images, targets) at `lr`, then one probe epoch."""

    stage = "eval"

    def __init__(self, cfg: Any, folder: Any, images: torch.Tensor | None, targets: torch.Tensor | None, lr: float,
                 in_channels: int, *, device: torch.device, **kwargs: Any) -> None:
        v = cfg.eval
        self.pretrain_epochs = 0 if images is None else v.pretrain_epochs
        super().__init__(cfg, folder, epochs=self.pretrain_epochs + 1, device=device, **kwargs)
        self.images = None if images is None else images.to(device)
        self.targets = None if targets is None else targets.to(device)
        self.lr = lr
        out_dim = 1 if targets is None else targets.shape[1]
        self.model = build_student(cfg, in_channels, out_dim, derive_seed(cfg.seed, 5)).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=v.momentum,
                                         weight_decay=v.weight_decay)

    def stage_epoch(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        if epoch <= self.pretrain_epochs:
            return self.pretrain(epoch, steps)
        v, d = self.cfg.eval, self.cfg.data
        self.model.eval()
        steps.start(len(v.label_fractions), unit="probe", description="linear probes")
        train, test = load_split(self.cfg, "train"), load_split(self.cfg, "test")
        return probe_accuracies(lambda x: self.model.forward_features(x).embedding, train, test, v.label_fractions,
                                seed=self.cfg.seed, batch_size=d.eval_batch_size, steps=v.probe_steps,
                                weight_decay=v.probe_weight_decay, device=self.device, progress=steps.step)

    def pretrain(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        assert self.images is not None and self.targets is not None
        self.model.train()
        n = self.images.shape[0]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.cfg.seed, epoch, 3)))
        batches = order.to(self.device).split(self.cfg.eval.batch_size)
        steps.start(len(batches), unit="img")
        total = 0.0
        for idx in batches:
            loss = representation_mse(self.model(self.images[idx]), self.targets[idx])
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"eval: non-finite pre-training MSE at epoch {epoch} (lr {self.lr:.4g})")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * len(idx)
            steps.step(loss.item(), count=len(idx))
        return {"pretrain_mse": total / n}

    def summary(self, history: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
        return {**super().summary(history, wall_time), "source": self.cfg.eval.source,
                "pretrain_lr": self.lr, "pretrain_images": 0 if self.images is None else int(self.images.shape[0])}

    def epoch_line(self, metrics: dict[str, Any]) -> str | None:
        probes = [f"{k[len('probe_top1_'):]} labels {v:.2f}%" for k, v in metrics.items()
                  if k.startswith("probe_top1_")]
        if probes:
            return f"linear probe: {', '.join(probes)}"
        return None
