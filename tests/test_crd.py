"""CRD: the NCE loss, the scores and the memory update against hand computations, the negative sampler (other
classes only, distinct, the positive first), gradients only into the student and both embeddings, the loader's
sample indices (the same batches as without them), a CLI run with and without DA with the memory bank in
`last.pt`, and the memory bank surviving a resume exactly."""

from __future__ import annotations

import math

import pytest
import torch

from socratic.context import TrainContext
from socratic.data import TensorLoader
from socratic.data.datasets import ImageDataset
from socratic.distillers import create_distiller
from socratic.distillers.crd import ContrastMemory, Embed, NegativeSampler, nce_loss
from socratic.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_nce_loss_matches_a_hand_computation() -> None:
    scores = torch.tensor([[0.5, 0.1, 0.2], [2.0, 0.0, 1.0]])  # B=2, K=2 negatives
    n = 10
    noise = 2 / n
    expected = 0.0
    for row in scores.tolist():
        expected -= math.log(row[0] / (row[0] + noise + 1e-7))
        expected -= sum(math.log(noise / (p + noise + 1e-7)) for p in row[1:])
    assert nce_loss(scores, n).item() == pytest.approx(expected / 2, rel=1e-6)


def test_scores_normalise_by_the_first_batch_and_the_update_moves_the_rows() -> None:
    memory = ContrastMemory(num_data=3, dim=2)
    memory.student.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
    memory.teacher.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.8, 0.6]]))
    e_s, e_t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    contrast = torch.tensor([[0, 1, 2]])
    s, t = memory.scores(e_s, e_t, contrast, temperature=0.5)
    raw_s = [math.exp(v / 0.5) for v in (0.0, 1.0, 0.8)]  # teacher memory rows . e_s
    raw_t = [math.exp(v / 0.5) for v in (0.0, 1.0, 0.8)]  # student memory rows . e_t
    z_s, z_t = sum(raw_s) / 3 * 3, sum(raw_t) / 3 * 3
    assert s[0].tolist() == pytest.approx([r / z_s for r in raw_s], rel=1e-6)
    assert t[0].tolist() == pytest.approx([r / z_t for r in raw_t], rel=1e-6)
    s2, _ = memory.scores(2 * e_s, e_t, contrast, temperature=0.5)  # Z stays the first batch's
    assert memory.z_student.item() == pytest.approx(z_s, rel=1e-6)
    assert s2[0, 1].item() == pytest.approx(math.exp(2.0 / 0.5) / z_s, rel=1e-6)
    memory.update(e_s, e_t, torch.tensor([2]), momentum=0.5)
    row = [0.5 * 0.6 + 0.5, 0.5 * 0.8]
    norm = math.hypot(*row)
    assert memory.student[2].tolist() == pytest.approx([row[0] / norm, row[1] / norm], rel=1e-6)
    assert memory.student[0].tolist() == [1.0, 0.0]  # rows outside the batch stay


def test_embed_is_unit_norm() -> None:
    out = Embed(5, 3)(torch.randn(4, 5))
    assert out.norm(dim=1).tolist() == pytest.approx([1.0] * 4, rel=1e-6)


def test_the_sampler_draws_other_classes_without_replacement() -> None:
    labels = torch.arange(40) % 4  # 10 per class, 30 others
    torch.manual_seed(0)
    exact = NegativeSampler(labels, num_negatives=30)
    assert not exact.with_replacement
    index = torch.tensor([0, 5, 13])
    drawn = exact(index)
    assert drawn.shape == (3, 31) and drawn[:, 0].tolist() == index.tolist()
    for i, row in zip(index.tolist(), drawn[:, 1:]):
        assert (labels[row] != labels[i]).all() and len(set(row.tolist())) == 30  # every other-class sample once
    relax = NegativeSampler(labels, num_negatives=5, mode="relax")(index)
    assert (labels[relax[:, 0]] == labels[index]).all()
    fallback = NegativeSampler(labels, num_negatives=31)
    assert fallback.with_replacement and (labels[fallback(index)[:, 1:]] != labels[index][:, None]).all()


def test_gradients_reach_the_student_and_both_embeddings_only() -> None:
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("wrn_16_1", num_classes=10)
    distiller = create_distiller("crd", student, teacher, num_negatives=8, kd_weight=0.5).train()
    with pytest.raises(ValueError, match="bind_train_set"):
        distiller.forward_train(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), TrainContext())
    labels = torch.arange(50) % 10
    distiller.bind_train_set(labels)
    assert set(distiller.trainable_modules()) == {"student", "embed", "memory"}
    with pytest.raises(ValueError, match="dataset index"):
        distiller.forward_train(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), TrainContext())
    before = distiller.memory.student.clone()
    index = torch.tensor([3, 7, 11, 20])
    _, losses = distiller.forward_train(torch.randn(4, 3, 32, 32), labels[index], TrainContext(indices=index))
    assert set(losses) == {"ce", "crd", "kd"} and torch.isfinite(losses["crd"])
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.conv1.weight.grad.abs().sum() > 0
    for embed in distiller.embed.values():
        assert embed.linear.weight.grad.abs().sum() > 0
    changed = (distiller.memory.student != before).any(dim=1)
    assert changed.nonzero().flatten().tolist() == index.tolist()  # only the batch's rows moved


def test_the_loader_gives_indices_without_changing_the_batches() -> None:
    images = torch.randint(0, 255, (30, 1, 8, 8), dtype=torch.uint8)
    dataset = ImageDataset(images=images, labels=torch.arange(30) % 3, classes=["a", "b", "c"], mean=(0.5,),
                           std=(0.25,), name="imagefolder")
    plain = list(TensorLoader(dataset, 8, shuffle=True, seed=3))
    indexed = list(TensorLoader(dataset, 8, shuffle=True, seed=3, with_indices=True))
    assert len(plain) == len(indexed) == 4
    for (x, y), (xi, yi, idx) in zip(plain, indexed):
        assert torch.equal(x, xi) and torch.equal(y, yi) and torch.equal(dataset.labels[idx], y)
        assert torch.allclose(xi, (images[idx].float() / 255 - 0.5) / 0.25, atol=1e-5)  # the batch is those images


CRD = {"name": "crd", "num_negatives": 16, "feat_dim": 8}


def test_crd_runs_from_the_command_line_with_and_without_da(method_cli_runs) -> None:
    dirs = method_cli_runs(CRD)
    extras = {}
    for variant, run_dir in dirs.items():
        state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
        extras[variant] = state["extra"]
        assert set(state["extra"]) == {"embed", "memory"}
        assert state["extra"]["memory"]["student"].shape == (100, 8)
        assert state["extra"]["memory"]["z_student"].item() > 0  # set by the first batch
        norms = state["extra"]["memory"]["teacher"].norm(dim=1)
        assert torch.allclose(norms, torch.ones(100), atol=1e-5)  # every row was updated (one epoch, all samples)
    assert not torch.equal(extras["plain"]["memory"]["student"], extras["da"]["memory"]["student"])


def test_the_memory_bank_survives_a_resume_exactly(method_cli_runs, stopped_and_resumed) -> None:
    config = method_cli_runs.config(CRD)
    config["optim"]["epochs"], config["data"]["train_subset"] = 2, 50  # two steps an epoch
    full, cut = (torch.load(r / "checkpoints" / "last.pt", weights_only=True)
                 for r in stopped_and_resumed(config, epoch=2, step=0))
    assert all(torch.equal(full["model"][k], cut["model"][k]) for k in full["model"])
    for part in ("embed", "memory"):
        assert all(torch.equal(full["extra"][part][k], cut["extra"][part][k]) for k in full["extra"][part])
