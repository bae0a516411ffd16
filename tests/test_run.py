"""The run skeleton on its own (socratic.engine.run): a toy kind of run, its loop order, resume, best.pt and NaN stop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from socratic.engine.logger import read_metrics
from socratic.engine.run import NonFiniteLossError, Run, RunFolder, RunFolderError, StepProgress, run_dir_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Regression(Run):
    """Least squares on fixed data; noise in each step from torch's global RNG (checkpointed by the skeleton)."""

    score_key, best_key = "val_score", "best_val_score"

    def __init__(self, folder: RunFolder, epochs: int = 4, poison_at: tuple[int, int] | None = None,
                 tensorboard: bool = False, **kw: Any) -> None:
        super().__init__(folder, epochs=epochs, progress=False, tensorboard=tensorboard, **kw)
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 3, generator=generator)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1
        torch.manual_seed(1)
        self.net = torch.nn.Linear(3, 1)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.05, momentum=0.9)
        self.poison_at = poison_at
        self.calls: list[str] = []

    def train_epoch(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        self.calls.append(f"train {epoch}")
        steps.start(4, unit="sample")
        total = 0.0
        for step in range(4):
            x, y = self.x[step * 16:(step + 1) * 16], self.y[step * 16:(step + 1) * 16]
            x = x + 0.01 * torch.randn_like(x)
            loss = ((self.net(x).squeeze(1) - y) ** 2).mean()
            if self.poison_at == (epoch, step):
                loss = loss * float("nan")
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {step}; stopped.")
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach())
            steps.step(loss=float(loss.detach()), count=len(x))
        return {"train_loss": total / 4}

    def evaluate(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(f"evaluate {epoch}")
        with torch.no_grad():
            return {"val_score": -float(((self.net(self.x).squeeze(1) - self.y) ** 2).mean()) if epoch != 3 else -1e9}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def best_state(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "epoch": epoch}


class Killed(Exception):
    pass


def _folder(tmp_path: Path, name: str, **kw: Any) -> RunFolder:
    return RunFolder(run_dir_for(tmp_path, name, 0), {"name": name, "lr": 0.05}, **kw)


def test_the_loop_writes_the_run_folder_in_order(tmp_path: Path) -> None:
    seen: list[str] = []
    run = Regression(_folder(tmp_path, "r"), step_callbacks=[lambda e, s: seen.append(f"step {e}.{s}")],
                     epoch_callbacks=[lambda e, m: seen.append(f"epoch {e} {sorted(m)}")])
    summary = run.fit()
    folder = run.folder
    assert run.calls == [f"{what} {e}" for e in range(1, 5) for what in ("train", "evaluate")]
    assert seen[:5] == ["step 1.0", "step 1.1", "step 1.2", "step 1.3",
                        "epoch 1 ['best_val_score', 'epoch', 'train_loss', 'val_score']"]
    metrics = read_metrics(folder.metrics_path)
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    best = max(metrics, key=lambda m: m["val_score"])
    assert torch.load(folder.best_path, weights_only=True)["epoch"] == best["epoch"] != 3
    assert metrics[2]["best_val_score"] == metrics[1]["best_val_score"]  # epoch 3 did not beat it
    last = torch.load(folder.last_path, weights_only=True)
    assert last["epoch"] == 4 and last["resolved"] == {"runtime.device (device type)": "cpu"}
    assert set(last["rng"]) >= {"torch", "numpy", "python"}
    assert json.loads(folder.summary_path.read_text()) == summary and summary["best_epoch"] == best["epoch"]
    assert not folder.is_open  # the lock is released at the end


def test_a_resumed_toy_run_matches_the_uninterrupted_one(tmp_path: Path) -> None:
    Regression(_folder(tmp_path, "full")).fit()

    def kill(epoch: int, step: int) -> None:
        if (epoch, step) == (3, 2):
            raise Killed

    with pytest.raises(Killed):
        Regression(_folder(tmp_path, "cut"), step_callbacks=[kill]).fit()
    resumed = Regression(_folder(tmp_path, "cut", resume=True))
    resumed.fit()
    assert resumed.calls[0] == "train 3"
    full, cut = (torch.load(run_dir_for(tmp_path, n, 0) / "checkpoints" / "last.pt", weights_only=True)
                 for n in ("full", "cut"))
    assert all(torch.equal(full["model"][k], cut["model"][k]) for k in full["model"])
    assert read_metrics(run_dir_for(tmp_path, "full", 0) / "metrics.jsonl") == \
        read_metrics(run_dir_for(tmp_path, "cut", 0) / "metrics.jsonl")
    with pytest.raises(RunFolderError, match="the config differs from the saved one in lr: 0.05 -> 0.1"):
        Regression(RunFolder(run_dir_for(tmp_path, "cut", 0), {"name": "cut", "lr": 0.1}, resume=True)).fit()


def test_nan_stop_names_the_last_good_checkpoint_or_removes_the_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match=r"last good checkpoint is .*last.pt \(epoch 1\)"):
        Regression(_folder(tmp_path, "late"), poison_at=(2, 1)).fit()
    assert torch.load(run_dir_for(tmp_path, "late", 0) / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    with pytest.raises(NonFiniteLossError, match="There is no last good checkpoint"):
        Regression(_folder(tmp_path, "early"), poison_at=(1, 0)).fit()
    assert not (tmp_path / "early").exists()


def _tensorboard(run_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return events


def test_tensorboard_has_grouped_tags_per_step_loss_and_hparams_across_a_resume(tmp_path: Path) -> None:
    Regression(_folder(tmp_path, "full"), tensorboard=True).fit()

    def kill(epoch: int, step: int) -> None:
        if (epoch, step) == (3, 2):
            raise Killed

    with pytest.raises(Killed):
        Regression(_folder(tmp_path, "cut"), tensorboard=True, step_callbacks=[kill]).fit()
    Regression(_folder(tmp_path, "cut", resume=True), tensorboard=True).fit()
    full, cut = (_tensorboard(run_dir_for(tmp_path, n, 0)) for n in ("full", "cut"))
    tags = set(full.Tags()["scalars"])
    assert {"train/loss", "val/score", "val/best_val_score", "run/epoch", "train/step_loss"} <= tags
    assert not tags & {"train_loss", "val_score"}  # no flat tags
    # 4 steps an epoch: one point per step, epoch metrics at the step that ended the epoch
    assert [e.step for e in full.Scalars("train/step_loss")] == list(range(1, 17))
    assert [e.step for e in full.Scalars("train/loss")] == [4, 8, 12, 16]
    jsonl = read_metrics(run_dir_for(tmp_path, "full", 0) / "metrics.jsonl")
    assert [e.value for e in full.Scalars("val/score")] == pytest.approx([m["val_score"] for m in jsonl])
    # the killed run's steps 9-11 were purged on resume: each step once, the values of the uninterrupted run
    for tag in ("train/step_loss", "train/loss", "run/epoch"):
        assert [(e.step, e.value) for e in cut.Scalars(tag)] == [(e.step, e.value) for e in full.Scalars(tag)]
    last = torch.load(run_dir_for(tmp_path, "cut", 0) / "checkpoints" / "last.pt", weights_only=True)
    assert last["global_step"] == 16
    hparams = full.PluginTagToContent("hparams")
    assert hparams and b"lr" in b"".join(hparams.values())  # the config's keys, for TensorBoard's HPARAMS tab


def test_tensorboard_tags() -> None:
    from socratic.engine.logger import flat_hparams, tensorboard_tag

    assert [tensorboard_tag(k) for k in ("train_kd", "val_top1", "da_disagreement_gain", "lr", "best_top1",
                                         "w_logit_1", "peak_memory_mb", "eval_score_mean")] == [
        "train/kd", "val/top1", "da/disagreement_gain", "train/lr", "val/best_top1", "teachers/w_logit_1",
        "run/peak_memory_mb", "eval/score_mean"]
    assert flat_hparams({"optim": {"lr": 0.1, "milestones": [1, 2]}, "x": None}) == {
        "optim.lr": 0.1, "optim.milestones": "[1, 2]", "x": "null"}
