"""Stage `teacher`: train the self-supervised encoder, probe it, and save its representation of every
pre-training image (no augmentation) as one N x d tensor in dataset order (`representations.pt`)."""

from __future__ import annotations

from typing import Any

import torch

from socratic.data import TensorLoader, build_augment
from socratic.distill_data.inputs import PretrainingSet, load_split
from socratic.distill_data.probe import extract, probe_accuracies
from socratic.distill_data.ssl import SSLTeacher
from socratic.distill_data.stage import ModelStageRun
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.optim import build_optimizer, set_epoch_lr
from socratic.engine.run import NonFiniteLossError, StepProgress

REPRESENTATIONS = "representations.pt"


class TeacherRun(ModelStageRun):
    """Barlow Twins (or SimCLR) epochs; after the last: linear probes and `representations.pt`."""

    stage = "teacher"

    def __init__(self, cfg: Any, folder: Any, data: PretrainingSet, *, device: torch.device, **kwargs: Any) -> None:
        t = cfg.teacher
        super().__init__(cfg, folder, epochs=t.optim.epochs, device=device, **kwargs)
        self.data = data
        self.model = SSLTeacher(t.model.name, t.model.kwargs, data.dataset.image_shape[0], t.projector, t.objective,
                                t.lambd, t.temperature).to(device)
        self.optimizer = build_optimizer([p for p in self.model.parameters() if p.requires_grad], t.optim)
        if len(data) < t.batch_size:
            raise ValueError(f"teacher.batch_size {t.batch_size} is larger than the pre-training set ({len(data)})")
        self.loader = TensorLoader(data.dataset, t.batch_size, shuffle=True, augment=build_augment(cfg.data.augment),
                                   seed=cfg.seed, drop_last=True, device=device)

    def stage_epoch(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        lr = set_epoch_lr(self.optimizer, epoch, self.cfg.teacher.optim)
        self.model.train()
        self.loader.set_epoch(epoch)
        steps.start(len(self.loader), unit="img")
        total, count = 0.0, 0
        for x, _ in self.loader:
            b = x.shape[0] // 2
            loss = self.model.loss(x[:b], x[b:])
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"teacher: non-finite SSL loss at epoch {epoch}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total, count = total + loss.item(), count + 1
            steps.step(loss.item(), count=b)
        return {"ssl_loss": total / max(count, 1), "lr": lr}

    def evaluate(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any] | None:
        if epoch != self.epochs:
            return None
        self.model.eval()
        encode = self.model.embed
        d = self.cfg.data
        reps = extract(encode, self.data.dataset, d.eval_batch_size, self.device)
        if self.is_main:
            save_checkpoint({"representations": reps, "indices": self.data.indices, "dim": int(reps.shape[1])},
                            self.run_dir / REPRESENTATIONS)
        train, test = load_split(self.cfg, "train"), load_split(self.cfg, "test")
        return probe_accuracies(encode, train, test, self.cfg.teacher.probe_fractions, seed=self.cfg.seed,
                                batch_size=d.eval_batch_size, steps=self.cfg.eval.probe_steps,
                                weight_decay=self.cfg.eval.probe_weight_decay, device=self.device)

    def summary(self, history: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
        return {**super().summary(history, wall_time), "representation_dim": self.model.embedding_dim}

    def epoch_line(self, metrics: dict[str, Any]) -> str | None:
        probes = " ".join(f"{k[len('probe_top1_'):]} {v:.2f}%" for k, v in metrics.items()
                          if k.startswith("probe_top1_"))
        return f"teacher epoch {metrics['epoch']}: ssl loss {metrics['ssl_loss']:.4g}" + (
            f", linear probe {probes}" if probes else "")
