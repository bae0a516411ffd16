"""ReviewKD: HCL against a hand computation, the ABF wiring and output shapes (also across models with different
stage counts), the warm-up from the context, gradients only into the student and the ABFs, a CLI run with and
without DA that checkpoints the ABFs, a resume that reproduces the uninterrupted run, and config errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from socratic.cli import main
from socratic.config import config_from_dict
from socratic.context import TrainContext
from socratic.distillers import create_distiller
from socratic.distillers.reviewkd import ABF, ReviewKD, hcl_level, hcl_loss
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.logger import read_metrics
from socratic.experiment import run_dir_for
from socratic.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _mse(a: list[float], b: list[float]) -> float:
    return sum((u - v) ** 2 for u, v in zip(a, b)) / len(a)


def _block_means(grid: list[list[float]], size: int) -> list[float]:
    """The means of the size x size blocks of a square grid whose side size divides (adaptive pooling)."""
    n = len(grid) // size
    return [sum(grid[r * n + i][c * n + j] for i in range(n) for j in range(n)) / (n * n)
            for r in range(size) for c in range(size)]


def test_hcl_matches_a_hand_computation() -> None:
    s = [[1.0, 2.0, 0.0, 1.0], [0.5, 0.0, 3.0, 1.0], [2.0, 1.0, 1.0, 0.0], [0.0, 4.0, 1.0, 2.0]]
    t = [[0.0, 1.0, 1.0, 1.0], [1.0, 2.0, 0.0, 0.0], [3.0, 0.0, 2.0, 1.0], [1.0, 1.0, 0.0, 0.5]]
    flat_s, flat_t = [v for row in s for v in row], [v for row in t for v in row]
    # height 4: the 4x4 level is skipped (not smaller than the map); 2x2 weighs 1/2, 1x1 1/4; divided by 1.75
    hand = (_mse(flat_s, flat_t) + 0.5 * _mse(_block_means(s, 2), _block_means(t, 2))
            + 0.25 * _mse(_block_means(s, 1), _block_means(t, 1))) / 1.75
    f_s, f_t = torch.tensor(s).view(1, 1, 4, 4), torch.tensor(t).view(1, 1, 4, 4)
    assert hcl_level(f_s, f_t).item() == pytest.approx(hand, rel=1e-6)
    # height 8: all three pooled sizes, 1/2, 1/4, 1/8, divided by 1.875
    torch.manual_seed(0)
    big_s, big_t = torch.rand(8, 8), torch.rand(8, 8)
    gs, gt = big_s.tolist(), big_t.tolist()
    hand8 = (_mse(sum(gs, []), sum(gt, [])) + sum(w * _mse(_block_means(gs, l), _block_means(gt, l))
                                                  for w, l in ((0.5, 4), (0.25, 2), (0.125, 1)))) / 1.875
    assert hcl_level(big_s.view(1, 1, 8, 8), big_t.view(1, 1, 8, 8)).item() == pytest.approx(hand8, rel=1e-5)
    one_s, one_t = torch.tensor([[[[2.0]], [[1.0]]]]), torch.tensor([[[[0.0]], [[1.5]]]])  # a 1x1 level: plain MSE
    assert hcl_level(one_s, one_t).item() == pytest.approx((4.0 + 0.25) / 2)
    total = hcl_loss([f_s, one_s, big_s.view(1, 1, 8, 8)], [f_t, one_t, big_t.view(1, 1, 8, 8)])
    assert total.item() == pytest.approx(hand + 2.125 + hand8, rel=1e-5)  # summed over levels
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = hcl_loss([f_s.bfloat16()], [f_t.bfloat16()])
    assert under_autocast.dtype == torch.float32 and under_autocast.item() == pytest.approx(hand, rel=1e-2)


def test_abf_fuses_with_the_deeper_residual() -> None:
    torch.manual_seed(0)
    abf = ABF(3, 4, 5, fuse=True).eval()
    x, residual = torch.randn(2, 3, 4, 4), torch.randn(2, 4, 2, 2)
    out, passed = abf(x, residual, (8, 8))
    assert out.shape == (2, 5, 8, 8) and passed.shape == (2, 4, 8, 8)
    x1 = abf.conv1(x)
    y = residual.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest upsampling 2x2 -> 4x4
    z = abf.att(torch.cat([x1, y], dim=1))
    fused = x1 * z[:, :1] + y * z[:, 1:]
    expected = fused.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.allclose(passed, expected, atol=1e-6) and torch.allclose(out, abf.conv2(expected), atol=1e-6)
    assert ABF(3, 4, 5, fuse=False).att is None and abf.att[0].bias is not None and abf.conv1[0].bias is None


def test_the_abfs_predict_the_teachers_levels() -> None:
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("resnet20", num_classes=10)
    distiller = create_distiller("reviewkd", student, teacher).train()
    assert isinstance(distiller, ReviewKD) and distiller.stages == [1, 2, 3] and distiller.mid_channels == 64
    assert (distiller.reviewkd_weight, distiller.warmup_epochs) == (5.0, 20)
    assert [abf.att is not None for abf in distiller.abfs] == [True, True, True, False]  # the deepest does not fuse
    x = torch.randn(2, 3, 32, 32)
    outputs = distiller.review(distiller._levels(student.forward_features(x)), [(32, 32), (16, 16), (8, 8), (1, 1)])
    assert [tuple(o.shape) for o in outputs] == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8), (2, 64, 1, 1)]
    # different stage counts (vgg8_bn has 5, resnet20 4) and widths: the stages are named, the sizes resized
    vgg = create_model("vgg8_bn", num_classes=10)
    mixed = create_distiller("reviewkd", vgg, teacher, stages=[1, 2, 3]).train()
    assert mixed.mid_channels == 512
    targets = mixed._levels(teacher.forward_features(x))
    outputs = mixed.review(mixed._levels(vgg.forward_features(x)), [tuple(t.shape[-2:]) for t in targets])
    assert [o.shape for o in outputs] == [t.shape for t in targets]
    assert [tuple(t.shape[1:]) for t in targets] == [(16, 32, 32), (32, 16, 16), (64, 8, 8), (64, 1, 1)]
    no_embedding = create_distiller("reviewkd", student, teacher, embedding=False, mid_channels=8)
    assert len(no_embedding.abfs) == 3 and no_embedding.mid_channels == 8


def test_the_targets_are_the_teachers_pre_relu_maps_unless_asked_otherwise() -> None:
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("resnet20", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    seen = {}
    for preact in (True, False):
        distiller = create_distiller("reviewkd", student, teacher, teacher_preact=preact).train()
        levels = distiller._levels(teacher.forward_features(x, preact=preact), preact)
        seen[preact] = levels
    assert all((t < 0).any() for t in seen[True][:-1]) and all((t >= 0).all() for t in seen[False][:-1])
    assert all(torch.equal(torch.relu(a), b) for a, b in zip(seen[True], seen[False]))
    with pytest.raises(ValueError, match=r"method.teacher_preact: the teacher WideResNet gives no pre-ReLU"):
        create_distiller("reviewkd", student, create_model("wrn_16_1", num_classes=10))
    create_distiller("reviewkd", student, create_model("wrn_16_1", num_classes=10), teacher_preact=False)


def test_gradients_reach_only_the_student_and_the_abfs_and_the_weight_warms_up() -> None:
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("resnet14", num_classes=10)
    distiller = create_distiller("reviewkd", student, teacher, warmup_epochs=4).train()
    assert not teacher.training and set(distiller.extra_modules()) == {"abfs"}
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    losses_at = {e: distiller.forward_train(x, y, TrainContext(epoch=e, epochs=8))[1]["reviewkd"] for e in (1, 2, 4, 8)}
    assert losses_at[1].item() == pytest.approx(losses_at[4].item() / 4, rel=1e-5)
    assert losses_at[2].item() == pytest.approx(losses_at[4].item() / 2, rel=1e-5)
    assert losses_at[8].item() == pytest.approx(losses_at[4].item(), rel=1e-5)
    logits, losses = distiller.forward_train(x, y, TrainContext(epoch=1, epochs=8))
    assert set(losses) == {"ce", "reviewkd"} and losses["reviewkd"].item() > 0 and logits.shape == (4, 10)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.conv1.weight.grad is not None and student.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.abfs.parameters())
    with pytest.raises(ValueError, match="needs the training context"):
        distiller.forward_train(x, y)


def test_stages_that_do_not_fit_are_config_errors() -> None:
    student, teacher = create_model("resnet8", num_classes=10), create_model("vgg8_bn", num_classes=10)
    with pytest.raises(ValueError, match=r"method.stages: null pairs every stage but the stem.*4 and 5 stages"):
        create_distiller("reviewkd", student, teacher)
    with pytest.raises(ValueError, match=r"method.stages: stage 4 is out of range for the student"):
        create_distiller("reviewkd", student, teacher, stages=[1, 4])
    with pytest.raises(ValueError, match=r"method.stages: \[3, 1\] must run from shallow to deep in the student"):
        create_distiller("reviewkd", student, student, stages=[3, 1])
    with pytest.raises(ValueError, match=r"method.mid_channels must be > 0"):
        create_distiller("reviewkd", student, student, mid_channels=0)
    with pytest.raises(ValueError, match=r"method.pool_levels must be positive integers"):
        create_distiller("reviewkd", student, student, pool_levels=[2, 0])


@pytest.fixture()
def reviewkd_config(run_config: dict, tmp_path: Path) -> dict:
    torch.manual_seed(5)
    path = tmp_path / "teacher.pt"
    save_checkpoint({"model": create_model("resnet8", num_classes=10, in_channels=1).state_dict(),
                     "meta": {"model_name": "resnet8", "num_classes": 10}}, path)
    return {**run_config, "name": "reviewkd", "teachers": [{"name": "resnet8", "checkpoint": str(path)}],
            "method": {"name": "reviewkd", "warmup_epochs": 3},
            "data": {**run_config["data"], "train_subset": 100, "batch_size": 25},
            "optim": {**run_config["optim"], "epochs": 1},
            "runtime": {**run_config["runtime"], "tensorboard": False, "num_threads": 1}}


def test_reviewkd_runs_from_the_command_line_and_checkpoints_the_abfs(reviewkd_config: dict, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "reviewkd.yaml"
    path.write_text(yaml.safe_dump(reviewkd_config))
    assert main(["distill", str(path)]) == 0
    assert main(["distill", str(path), "name=reviewkd_da", "da.enabled=true", "da.prob=1.0"]) == 0
    plain_dir = run_dir_for(config_from_dict(reviewkd_config))
    plain = read_metrics(plain_dir / "metrics.jsonl")
    with_da = read_metrics(run_dir_for(config_from_dict({**reviewkd_config, "name": "reviewkd_da"})) / "metrics.jsonl")
    assert math.isfinite(plain[0]["train_reviewkd"]) and plain[0]["train_reviewkd"] > 0
    assert "da_perturbed" not in plain[0]
    assert with_da[0]["da_perturbed"] == 1.0 and with_da[0]["train_reviewkd"] != plain[0]["train_reviewkd"]
    extra = torch.load(plain_dir / "checkpoints" / "last.pt", weights_only=True)["extra"]["abfs"]
    assert {"0.conv1.0.weight", "0.conv2.1.running_mean", "2.att.0.bias", "3.conv2.0.weight"} <= set(extra)
    assert not any(k.startswith("3.att") for k in extra)  # the deepest level (the embedding) does not fuse
    bn_scales = [k for k in extra if k.endswith(("conv1.1.weight", "conv2.1.weight"))]
    assert len(bn_scales) == 8 and all(not torch.equal(extra[k], torch.ones_like(extra[k])) for k in bn_scales)
    capsys.readouterr()
    assert main(["distill", str(path), "name=reviewkd_bad", "method.stages=[1, 7]"]) == 2
    assert "method.stages: stage 7 is out of range" in capsys.readouterr().err


def test_a_resume_in_the_warm_up_reproduces_the_uninterrupted_run(reviewkd_config: dict, stopped_and_resumed) -> None:
    config = {**reviewkd_config, "optim": {**reviewkd_config["optim"], "epochs": 2}}
    runs = stopped_and_resumed(config, epoch=2, step=1)  # warm-up factor 1/3 in epoch 1, 2/3 in epoch 2
    full, cut = (torch.load(r / "checkpoints" / "last.pt", weights_only=True) for r in runs)
    assert all(torch.equal(full["model"][k], cut["model"][k]) for k in full["model"])
    extra_full, extra_cut = full["extra"]["abfs"], cut["extra"]["abfs"]
    assert set(extra_full) == set(extra_cut) and all(torch.equal(extra_full[k], extra_cut[k]) for k in extra_full)
    losses = [[m["train_reviewkd"] for m in read_metrics(r / "metrics.jsonl")] for r in runs]
    assert losses[0] == losses[1]
