"""socratic.lightning: a registered method trained by a tiny Lightning `Trainer(max_epochs=...)` on the CPU
(Lightning is in the dev extra; the module is importable only with it)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import socratic

lightning = pytest.importorskip("lightning", reason='the [lightning] extra: pip install "socratic-kd[lightning]"')
from socratic.lightning import DistillationCallback, DistillationModule  # noqa: E402


def _plain(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 10))


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 3, 16, 16, generator=g), torch.randint(0, 10, (16,), generator=g))
    return DataLoader(data, batch_size=8)


def _trainer(**kwargs) -> "lightning.Trainer":
    return lightning.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             limit_val_batches=1, **kwargs)


def test_a_method_with_extras_an_epoch_hook_and_da_trains_one_epoch() -> None:
    """MTKD-RL: its feature regressors are optimised, its agent's epoch hook runs, DA perturbs every batch."""
    torch.manual_seed(0)
    student = _plain(8)
    criterion = socratic.DistillationLoss("mtkd_rl", [_plain(8), _plain(12)], student, input_shape=(3, 16, 16))
    regressors = criterion.distiller.regressors
    before = [p.detach().clone() for p in regressors.parameters()]
    student_before = student[0].weight.detach().clone()
    module = DistillationModule(criterion, optimizer=lambda p: torch.optim.SGD(p, lr=0.05),
                                augmentation=socratic.DisagreementAugmentation(prob=1.0))
    trainer = _trainer()
    trainer.fit(module, _loader(), _loader())
    metrics = trainer.callback_metrics
    assert {"train/ce", "train/kd", "train/feat", "val/top1", "method/w_logit_0", "method/agent_loss"} <= set(metrics)
    assert float(metrics["method/da_perturbed"]) == 1.0
    assert criterion.distiller.strategy.agent.epochs_done == 1  # on_epoch_end ran once
    assert not torch.equal(student[0].weight, student_before)
    assert all(not torch.equal(a, b) for a, b in zip(before, regressors.parameters()))


def test_the_callback_calls_the_hooks_of_a_users_own_module() -> None:
    class Own(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = _plain(8)
            self.kd = socratic.DistillationLoss("mtkd_rl", [_plain(8), _plain(12)], self.model,
                                                input_shape=(3, 16, 16))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return self.kd(x, y, epoch=self.current_epoch + 1)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    own = Own()
    trainer = _trainer(callbacks=[DistillationCallback()])
    trainer.fit(own, _loader())
    assert own.kd.distiller.strategy.agent.epochs_done == 1
    assert "method/w_logit_0" in trainer.callback_metrics
