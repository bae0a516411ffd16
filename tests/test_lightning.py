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
    data = TensorDataset(torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 10, (32,), generator=g))
    return DataLoader(data, batch_size=8)


def _trainer(max_epochs: int, **kwargs) -> "lightning.Trainer":
    return lightning.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0, **kwargs)


def test_a_feature_method_with_extras_and_da_trains_one_epoch() -> None:
    torch.manual_seed(0)
    student = _plain(8)
    criterion = socratic.DistillationLoss("fitnet", _plain(16), student, hint_layer=-1, input_shape=(3, 16, 16))
    before = {k: v.clone() for k, v in criterion.distiller.regressor.state_dict().items()}
    student_before = student[0].weight.detach().clone()
    module = DistillationModule(criterion, optimizer=lambda p: torch.optim.SGD(p, lr=0.05),
                                augmentation=socratic.DisagreementAugmentation(prob=1.0))
    trainer = _trainer(1)
    trainer.fit(module, _loader(), _loader())
    metrics = trainer.callback_metrics
    assert {"train/ce", "train/hint", "val/top1", "method/da_perturbed"} <= set(metrics)
    assert float(metrics["method/da_perturbed"]) == 1.0
    assert not torch.equal(student[0].weight, student_before)
    assert any(not torch.equal(before[k], v) for k, v in criterion.distiller.regressor.state_dict().items())


def test_the_epoch_hook_runs_each_epoch_so_mtkd_rl_learns() -> None:
    torch.manual_seed(0)
    criterion = socratic.DistillationLoss("mtkd_rl", [_plain(8), _plain(12)], _plain(8), input_shape=(3, 16, 16))
    module = DistillationModule(criterion)
    trainer = _trainer(2)
    trainer.fit(module, _loader())
    agent = criterion.distiller.strategy.agent
    assert agent.epochs_done == 2
    assert float(trainer.callback_metrics["method/w_logit_0"]) != 1.0  # epoch 2: the agent's weights


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
    _trainer(2, callbacks=[DistillationCallback()]).fit(own, _loader())
    assert own.kd.distiller.strategy.agent.epochs_done == 2
