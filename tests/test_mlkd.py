"""MLKD and its strong augmentation: the class- and batch-level losses and the masks by hand, the composition of
the reference's terms, gradients only into the student, the tensor RandAugment (operations by hand and against
PIL, seeded by the loader's generator), and a CLI run with and without DA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from socratic.cli import main
from socratic.config import ConfigError, config_from_dict
from socratic.context import TrainContext
from socratic.data.augment import build_augment
from socratic.data.transforms.crop_flip import BatchAugment
from socratic.data.transforms.rand_augment import CUTOUT_FILL, OPERATIONS, StrongAugment, apply_operation
from socratic.distillers import create_distiller, method_options
from socratic.distillers.mlkd import (batch_correlation_loss, class_correlation_loss, confidence_masks,
                                      mlkd_losses)
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.logger import read_metrics
from socratic.experiment import run_dir_for
from socratic.losses import kd_loss, standardize_logits
from socratic.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _softmax(z: np.ndarray, t: float) -> np.ndarray:
    e = np.exp(z / t - (z / t).max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_correlation_losses_and_masks_match_a_hand_computation() -> None:
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    p_s, p_t = _softmax(s, 2.0), _softmax(t, 2.0)
    cc = sum((sum(p_t[b, i] * p_t[b, j] - p_s[b, i] * p_s[b, j] for b in range(4))) ** 2
             for i in range(3) for j in range(3)) / 3
    bc = sum((sum(p_t[a, c] * p_t[b, c] - p_s[a, c] * p_s[b, c] for c in range(3))) ** 2
             for a in range(4) for b in range(4)) / 4
    s_, t_ = torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32)
    assert class_correlation_loss(s_, t_, 2.0).item() == pytest.approx(cc, rel=1e-5)
    assert batch_correlation_loss(s_, t_, 2.0).item() == pytest.approx(bc, rel=1e-5)
    p1 = _softmax(t, 1.0)
    mask, class_mask = confidence_masks(t_)
    assert mask.tolist() == list(p1.max(1) <= np.percentile(p1.max(1), 50))
    assert class_mask.tolist() == list(p1.sum(0) <= np.percentile(p1.sum(0), 50))


def test_the_terms_are_composed_as_the_reference() -> None:
    torch.manual_seed(0)
    sw, ss, tw, ts = (torch.randn(6, 5) for _ in range(4))
    got = mlkd_losses(sw, ss, tw, ts, temperature=4.0, kd_weight=0.9)
    mask, cmask = confidence_masks(tw)
    f, cf = mask.float().mean().item(), cmask.float().mean().item()
    temps = (4.0, 3.0, 5.0, 2.0, 6.0)
    kd = sum(0.9 * kd_loss(sw, tw, t).item() * f for t in temps)
    kd += sum(0.9 * kd_loss(ss, ts, t).item() for t in (4.0, 3.0, 5.0))
    kd += sum(0.9 * kd_loss(sw, tw, t).item() for t in (2.0, 6.0))  # the reference's weak logits at 2 and 6
    assert got["kd"].item() == pytest.approx(kd, rel=1e-5)
    assert got["cc"].item() == pytest.approx(sum(0.9 * class_correlation_loss(sw, tw, t).item() * cf
                                                 for t in temps), rel=1e-5)
    assert got["bc"].item() == pytest.approx(sum(0.9 * batch_correlation_loss(sw, tw, t).item() * f
                                                 for t in temps), rel=1e-5)
    ls = mlkd_losses(sw, ss, tw, ts, temperature=2.0, kd_weight=9.0, standardize=True)
    z = [standardize_logits(v) for v in (sw, ss, tw, ts)]
    assert ls["kd"].item() == pytest.approx(mlkd_losses(*z, temperature=2.0, kd_weight=9.0)["kd"].item(), rel=1e-5)
    assert ls["cc"].item() == pytest.approx(9.0 / 0.9 * mlkd_losses(sw, ss, tw, ts, 2.0)["cc"].item(), rel=1e-5)


def test_the_distiller_takes_two_views_and_trains_only_the_student() -> None:
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("resnet14", num_classes=10)
    distiller = create_distiller("mlkd", student, teacher).train()
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    logits, losses = distiller.forward_train(x, y, TrainContext())
    assert logits.shape == (4, 10) and set(losses) == {"ce", "kd", "cc", "bc"}
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters()) and student.fc.weight.grad is not None
    with pytest.raises(ValueError, match="two_view"):
        distiller.forward_train(x[:4], y, TrainContext())
    with pytest.raises(ValueError, match="method.temperature"):
        method_options("mlkd", temperature=0.0)


def test_operations_by_hand_and_against_pil() -> None:
    x = torch.arange(0, 256, dtype=torch.float32).view(1, 1, 16, 16).repeat(1, 3, 1, 1)
    x[0, 1] = x[0, 1].flip(1)
    assert torch.equal(apply_operation("solarize", x, torch.tensor([100.0])), torch.where(x < 100, x, 255 - x))
    assert torch.equal(apply_operation("posterize", x, torch.tensor([5.7])), torch.floor(x / 8) * 8)  # 5 bits
    assert torch.equal(apply_operation("identity", x, torch.tensor([0.3])), x)
    assert torch.equal(apply_operation("translate_x", x, torch.tensor([0.25]))[..., :12], x[..., 4:])  # 4 px
    pil = pytest.importorskip("PIL")
    from PIL import Image, ImageEnhance, ImageOps

    rng = np.random.default_rng(1)
    img = rng.integers(0, 200, size=(32, 32, 3), dtype=np.uint8)  # >= 255 pixels: equalize acts
    tensor = torch.tensor(img, dtype=torch.float32).permute(2, 0, 1)[None]
    as_pil = Image.fromarray(img)
    expected = {"equalize": ImageOps.equalize(as_pil), "auto_contrast": ImageOps.autocontrast(as_pil),
                "brightness": ImageEnhance.Brightness(as_pil).enhance(0.4),
                "contrast": ImageEnhance.Contrast(as_pil).enhance(0.4),
                "color": ImageEnhance.Color(as_pil).enhance(0.4),
                "sharpness": ImageEnhance.Sharpness(as_pil).enhance(0.4),
                "solarize": ImageOps.solarize(as_pil, 0.4)}
    for name, want in expected.items():
        got = apply_operation(name, tensor, torch.tensor([0.4]))[0].permute(1, 2, 0).numpy()
        assert np.abs(got - np.asarray(want, dtype=np.float32)).max() <= 1.0, (name, pil.__version__)


def test_the_strong_augmentation_is_seeded_by_the_loader_generator() -> None:
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    strong = build_augment({"name": "rand_augment"})
    assert isinstance(strong, StrongAugment) and len(OPERATIONS) == 14
    a = strong(images, torch.Generator().manual_seed(3))
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a, strong(images, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, strong(images, torch.Generator().manual_seed(4)))
    two = build_augment("two_view")(images, torch.Generator().manual_seed(3))
    assert two.shape == (32, 3, 32, 32)
    assert torch.equal(two[:16], BatchAugment()(images, torch.Generator().manual_seed(3)))  # the weak view first
    only_cutout = StrongAugment(padding=0, flip=False, num_ops=0, cutout=0.5)
    out = only_cutout(images, torch.Generator().manual_seed(0))
    changed = (out != images).any(dim=1)
    filled = (out == torch.tensor(CUTOUT_FILL, dtype=torch.uint8).view(1, 3, 1, 1)).all(dim=1)
    assert changed.any() and bool((filled | ~changed).all())  # only the cutout square changes, to the fill
    assert changed.float().mean(dim=(1, 2)).max() <= 0.25 + 1e-6  # side <= 0.5 of the image
    with pytest.raises(ValueError, match="data.augment.cutout"):
        build_augment({"name": "rand_augment", "cutout": 2.0})


@pytest.fixture()
def mlkd_config(run_config: dict, tmp_path: Path) -> dict:
    torch.manual_seed(5)
    teacher = tmp_path / "teacher.pt"
    save_checkpoint({"model": create_model("resnet8", num_classes=10, in_channels=1).state_dict(),
                     "meta": {"model_name": "resnet8", "num_classes": 10}}, teacher)
    return {**run_config, "name": "mlkd", "teachers": [{"name": "resnet8", "checkpoint": str(teacher)}],
            "method": {"name": "mlkd"},
            "data": {**run_config["data"], "train_subset": 100, "batch_size": 25, "augment": {"name": "two_view"}},
            "optim": {**run_config["optim"], "epochs": 1},
            "runtime": {**run_config["runtime"], "tensorboard": False, "num_threads": 1}}


def test_mlkd_runs_from_the_command_line_with_and_without_da(mlkd_config: dict, tmp_path: Path) -> None:
    config = mlkd_config
    path = tmp_path / "mlkd.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["distill", str(path)]) == 0
    assert main(["distill", str(path), "name=mlkd_da", "da.enabled=true", "da.prob=1.0"]) == 0
    plain = read_metrics(run_dir_for(config_from_dict(config)) / "metrics.jsonl")
    with_da = read_metrics(run_dir_for(config_from_dict({**config, "name": "mlkd_da"})) / "metrics.jsonl")
    assert plain[0]["train_kd"] > 0 and plain[0]["train_cc"] > 0 and plain[0]["train_bc"] > 0
    assert "da_perturbed" not in plain[0]
    assert with_da[0]["da_perturbed"] == 1.0 and with_da[0]["train_kd"] != plain[0]["train_kd"]
    without_views = {**config, "name": "mlkd_one_view", "data": {**config["data"], "augment": {"name": "crop_flip"}}}
    path.write_text(yaml.safe_dump(without_views))
    with pytest.raises(ConfigError, match="method.name 'mlkd' takes 2: use one of ssl_views, two_view"):
        config_from_dict(without_views)  # refused with the config: exit 2 from the command line, no run folder
    assert main(["distill", str(path)]) == 2
    assert not (Path(config["output_dir"]) / "mlkd_one_view").exists()


def test_a_resume_reproduces_the_uninterrupted_run(mlkd_config: dict, stopped_and_resumed) -> None:
    config = {**mlkd_config, "optim": {**mlkd_config["optim"], "epochs": 2}}
    runs = stopped_and_resumed(config, epoch=2, step=1)  # the strong views are drawn from the loader's generator
    full, cut = (torch.load(r / "checkpoints" / "last.pt", weights_only=True)["model"] for r in runs)
    assert all(torch.equal(full[k], cut[k]) for k in full)
    losses = [[(m["train_kd"], m["train_cc"]) for m in read_metrics(r / "metrics.jsonl")] for r in runs]
    assert losses[0] == losses[1]
