"""DML: the mutual KL against a hand computation, each peer's gradient from its own loss only, one optimiser per
peer (each saved in last.pt and restored on resume), every peer evaluated, a CLI run without a teacher, with and
without DA (toward disagreement with the peers), and the config errors (no peers, a teacher given, a DA target
that is not a peer)."""

from __future__ import annotations

import math

import pytest
import torch

import socratic
from socratic.augment import DisagreementAugmentation, disagreement_score
from socratic.cli import main
from socratic.config import config_from_dict
from socratic.distillers import create_distiller
from socratic.distillers.dml import DML, mutual_kl
from socratic.engine.logger import read_metrics
from socratic.experiment import run_dir_for
from socratic.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_mutual_kl_matches_a_hand_computation() -> None:
    z = [torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([[0.5, 0.5, 0.0]])]
    p = [_softmax(t[0].tolist()) for t in z]
    got = mutual_kl(z)
    for k in range(3):
        expected = sum(_kl(p[j], p[k]) for j in range(3) if j != k) / 2
        assert got[k].item() == pytest.approx(expected, rel=1e-5)


def test_each_peer_gets_the_gradient_of_its_own_loss_only() -> None:
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=10)
    distiller = create_distiller("dml", student, peers=["wrn_16_1"]).train()
    assert isinstance(distiller, DML) and list(distiller.optimizer_groups()) == ["student", "peer1"]
    assert list(distiller.evaluated_models()) == ["peer1"]
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    _, losses = distiller.forward_train(x, y)
    assert set(losses) == {"ce", "kl", "peer1_ce", "peer1_kl"}
    (losses["ce"] + losses["kl"]).backward()  # the student's loss alone: nothing reaches the peer
    assert student.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in distiller.peers.parameters())


def test_config_errors() -> None:
    student = create_model("resnet8", num_classes=10)
    with pytest.raises(ValueError, match=r"method.peers must list the model names"):
        create_distiller("dml", student)
    with pytest.raises(ValueError, match=r"method.peers\[0\]: unknown model 'nope'"):
        create_distiller("dml", student, peers=["nope"])
    with pytest.raises(ValueError, match=r"takes 0 teacher"):
        create_distiller("dml", student, create_model("resnet8", num_classes=10), peers=["resnet8"])


DMLM = {"name": "dml", "peers": ["resnet8"]}


def test_da_moves_the_batch_toward_disagreement_with_the_peers_and_leaves_their_buffers() -> None:
    torch.manual_seed(0)
    distiller = create_distiller("dml", create_model("resnet8", num_classes=10), peers=["resnet8"]).train()
    peer = distiller.peers[0]
    assert distiller.disagreement_targets() == [peer] and peer.training
    buffers = {k: v.clone() for k, v in peer.state_dict().items()}
    x = torch.randn(8, 3, 32, 32)
    da = DisagreementAugmentation(steps=3, lr=0.05, prob=1.0, optimizer="sign")
    x_new = da(x, distiller.student, distiller.disagreement_targets())
    assert not torch.equal(x_new, x)
    assert all(torch.equal(v, peer.state_dict()[k]) for k, v in buffers.items()), "DA changed the peer's buffers"
    with torch.no_grad():
        before, after = (disagreement_score(distiller.student(b), peer(b)).item() for b in (x, x_new))
    assert after > before
    criterion = socratic.DistillationLoss("dml", [], distiller.student, peers=[peer])  # a user's own loop
    assert criterion.disagreement_targets() == [peer]


def test_dml_runs_from_the_command_line_and_evaluates_every_peer(method_cli_runs, capsys) -> None:
    runs = method_cli_runs(DMLM, teachers=0)
    run_dir = runs["plain"]
    metrics = read_metrics(run_dir / "metrics.jsonl")[-1]
    assert {"val_top1", "val_peer1_top1", "val_max_top1", "train_peer1_ce", "train_kl"} <= set(metrics)
    assert metrics["val_max_top1"] == max(metrics["val_top1"], metrics["val_peer1_top1"])
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert set(state["optimizers"]) == {"student", "peer1"} and set(state["extra"]) == {"peers"}
    assert state["optimizers"]["peer1"]["state"], "the peer's optimiser has its own momentum buffers"
    summary = __import__("json").loads((run_dir / "summary.json").read_text())
    assert set(summary["peers"]) == {"peer1"} and summary["best_max_top1"] >= summary["best_top1"]
    da_metrics = read_metrics(runs["da"] / "metrics.jsonl")[-1]  # DA toward the student-peer disagreement
    assert da_metrics["da_perturbed"] == 1.0 and da_metrics["da_abs_dx"] > 0
    assert da_metrics["train_peer1_kl"] != metrics["train_peer1_kl"]
    capsys.readouterr()
    path = run_dir.parents[1].parent / "dml.yaml"
    assert main(["distill", str(path), "name=dml_da1", "da.enabled=true", "da.target=1"]) == 2
    assert "da.target=1 but the config has 1 model(s) in method.peers" in capsys.readouterr().err


def test_a_resumed_dml_run_restores_every_peer_and_optimiser(method_cli_runs, stopped_and_resumed) -> None:
    config = method_cli_runs.config(DMLM, teachers=0)
    config["optim"]["epochs"], config["data"]["train_subset"] = 2, 50  # two steps an epoch
    full, cut = (torch.load(r / "checkpoints" / "last.pt", weights_only=True)
                 for r in stopped_and_resumed(config, epoch=2, step=0))
    assert all(torch.equal(full["model"][k], cut["model"][k]) for k in full["model"])
    peers_full, peers_cut = full["extra"]["peers"], cut["extra"]["peers"]
    assert all(torch.equal(peers_full[k], peers_cut[k]) for k in peers_full)
    for name in ("student", "peer1"):
        a, b = full["optimizers"][name]["state"], cut["optimizers"][name]["state"]
        assert all(torch.equal(a[i]["momentum_buffer"], b[i]["momentum_buffer"]) for i in a)
    assert run_dir_for(config_from_dict({**config, "name": "cut"})).exists()
