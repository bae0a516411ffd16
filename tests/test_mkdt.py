"""MKDT (socratic.distill_data): losses against hand-computed values, the expert recorder, high-loss selection,
trajectory matching (loss 1 at N = 0, decreasing on a toy problem with a known answer, constant-memory and
unrolled meta-gradients equal), every stage resuming to the uninterrupted result, a tiny end-to-end pipeline on
generated images through the command line, and the errors of a stage started too early."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from socratic.cli import main
from socratic.data import TensorLoader
from socratic.data.datasets import ImageDataset
from socratic.distill_data.config import load_mkdt_config, mkdt_config_from_dict, stage_dir
from socratic.distill_data.experts import ExpertRecorder, expert_files, train_expert
from socratic.distill_data.losses import barlow_twins_loss, match_loss, nt_xent_loss
from socratic.distill_data.matching import (FlatModel, meta_gradient, minibatches, recompute_meta_gradient,
                                            student_steps, unrolled_meta_gradient)
from socratic.distill_data.pipeline import run_stage
from socratic.distill_data.selection import per_example_losses, top_fraction
from socratic.engine.checkpoint import load_checkpoint
from socratic.models import create_model

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "mkdt"


# ------------------------------------------------------------------------------------------------- losses
def test_barlow_twins_loss_by_hand() -> None:
    # standardised over the batch: z1 -> [[-1, 1], [1, -1]], z2 -> [[-1, -1], [1, 1]]; C = z1ᵀz2 / 2 =
    # [[1, 1], [-1, -1]]: on the diagonal (1 - 1)² + (1 - (-1))² = 4, off it 1² + (-1)² = 2
    z1 = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    z2 = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    assert float(barlow_twins_loss(z1, z2, lambd=0.5, eps=0.0)) == pytest.approx(4 + 0.5 * 2)
    assert float(barlow_twins_loss(z1, z2, lambd=0.0, eps=0.0)) == pytest.approx(4.0)


def test_nt_xent_loss_by_hand() -> None:
    # views e1, e2, e1, e2 at temperature 1: each view sees its positive at similarity 1 and two negatives at 0
    z = torch.eye(2)
    expected = math.log((2 + math.e) / math.e)
    assert float(nt_xent_loss(z, z.clone(), temperature=1.0)) == pytest.approx(expected)
    # at temperature 0.5 the positive's logit is 2
    assert float(nt_xent_loss(z, z.clone(), temperature=0.5)) == pytest.approx(math.log((2 + math.e**2) / math.e**2))


def test_loss_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="two"):
        barlow_twins_loss(torch.zeros(4, 3), torch.zeros(4, 2))


# ------------------------------------------------------------------------------------------ experts, selection
def test_expert_recorder_saves_init_and_every_epoch() -> None:
    torch.manual_seed(0)
    model = create_model("convnet", 4, 3, depth=1, width=4, image_size=8)
    images = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    data = ImageDataset(images, torch.arange(12), ["x"], (0.5,) * 3, (0.25,) * 3, "toy")
    start = nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    trajectory = train_expert(model, TensorLoader(data, 5, shuffle=True), torch.randn(12, 4), epochs=3, lr=0.05,
                              momentum=0.9, weight_decay=0.0)
    assert trajectory.shape == (4, sum(p.numel() for p in model.parameters()))
    assert torch.equal(trajectory[0], start)
    assert torch.equal(trajectory[-1], nn.utils.parameters_to_vector(model.parameters()).detach())
    assert all(not torch.equal(trajectory[i], trajectory[i + 1]) for i in range(3))
    recorder = ExpertRecorder(model)
    recorder.record()
    recorder.record()
    assert recorder.trajectory().shape[0] == 2


def test_high_loss_selection() -> None:
    losses = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.5])
    assert top_fraction(losses, 0.4).tolist() == [3, 1]  # the largest first; the tie 0.5 by the lower index
    assert top_fraction(losses, 0.01).tolist() == [3]  # at least one
    # per-example MSE under known parameters: f(x) = 2x + 1 against y = 0 -> (2x + 1)²
    flat = FlatModel(nn.Linear(1, 1))
    theta = torch.tensor([2.0, 1.0])
    x = torch.tensor([[0.0], [1.0], [-1.0]])
    got = per_example_losses(flat, theta, x, torch.zeros(3, 1), batch_size=2)
    assert got.tolist() == [1.0, 9.0, 1.0]


# ----------------------------------------------------------------------------------------------- matching
def _toy(seed: int = 0) -> tuple[FlatModel, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    flat = FlatModel(create_model("convnet", 4, 3, depth=1, width=4, image_size=8).double())
    start = flat.vector()
    return flat, start, torch.randn(10, 3, 8, 8, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64)


def test_matching_loss_is_one_after_zero_steps() -> None:
    flat, start, x, y = _toy()
    target = start + 0.1 * torch.randn_like(start)
    assert float(match_loss(student_steps(flat, start, x, y, 0.1, []), start, target)) == 1.0
    for mode in ("recompute", "unrolled"):
        result = meta_gradient(mode, flat, start, target, x, y, torch.tensor(0.1, dtype=torch.float64), [])
        assert float(result.loss) == 1.0
        assert float(result.images.abs().sum()) == 0.0


def test_constant_memory_and_unrolled_meta_gradients_agree() -> None:
    flat, start, x, y = _toy(1)
    target = start + 0.05 * torch.randn_like(start)
    lr = torch.tensor(0.1, dtype=torch.float64)
    batches = minibatches(10, 4, 7, torch.Generator().manual_seed(0))  # 7 steps: two passes, short chunks
    a = unrolled_meta_gradient(flat, start, target, x, y, lr, batches)
    b = recompute_meta_gradient(flat, start, target, x, y, lr, batches)
    assert float(a.loss) == pytest.approx(float(b.loss), rel=1e-12)
    for ga, gb in ((a.images, b.images), (a.targets, b.targets), (a.lr, b.lr)):
        assert ga.abs().max() > 0
        torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-12)
    # and both are the derivative: a central difference in the step size
    eps = 1e-6
    plus = meta_gradient("recompute", flat, start, target, x, y, lr + eps, batches).loss
    minus = meta_gradient("recompute", flat, start, target, x, y, lr - eps, batches).loss
    assert float(b.lr) == pytest.approx(float((plus - minus) / (2 * eps)), rel=1e-5)


def test_matching_decreases_to_the_known_answer_on_a_toy_problem() -> None:
    # A linear model; the expert takes one full-batch GD step on real (X, Y) at lr 0.1. The synthetic set starting
    # at (X, Y + noise) with one step of the same size has the answer Y: the matching loss must go towards 0.
    torch.manual_seed(0)
    flat = FlatModel(nn.Linear(3, 2).double())
    start = flat.vector()
    x = torch.randn(8, 3, dtype=torch.float64)
    y = torch.randn(8, 2, dtype=torch.float64)
    batch = [torch.arange(8)]
    target = student_steps(flat, start, x, y, 0.1, batch)
    lr = torch.tensor(0.1, dtype=torch.float64)
    assert float(meta_gradient("recompute", flat, start, target, x, y, lr, batch).loss) < 1e-20
    targets = (y + 0.5 * torch.randn_like(y)).requires_grad_(True)
    optimizer = torch.optim.SGD([targets], lr=0.5, momentum=0.5)
    losses = []
    for _ in range(40):
        result = meta_gradient("recompute", flat, start, target, x, targets, lr, batch)
        losses.append(float(result.loss))
        optimizer.zero_grad()
        targets.grad = result.targets
        optimizer.step()
    assert losses[-1] < 0.1 * losses[0]
    assert all(b <= a + 1e-12 for a, b in zip(losses[:5], losses[1:6]))


# ------------------------------------------------------------------------------------------------ pipeline
def _write_images(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("test", 20)):
        for c in range(4):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count // 4):
                img = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
                img[c * 4:c * 4 + 4, :, c % 3] = 220
                Image.fromarray(img).save(folder / f"{i}.png")


TINY = """
name: tiny
output_dir: {out}
data: {{name: imagefolder, root: {data}, eval_batch_size: 20, cache_dir: {cache}}}
teacher:
  model: {{name: resnet8}}
  projector: [16, 16]
  batch_size: 10
  optim: {{epochs: 2, lr: 0.05, warmup_epochs: 0}}
  probe_fractions: [0.5]
student: {{name: convnet, kwargs: {{depth: 2, width: 4, image_size: 16}}}}
experts: {{num_experts: 2, epochs: 3, batch_size: 10, lr: 0.05}}
select: {{fractions: [0.25]}}
distill: {{fraction: 0.25, iterations: 4, iterations_per_epoch: 2, syn_steps: 3, batch_syn: 5, max_start_epoch: 1,
          lr_img: 10}}
eval: {{fraction: 0.25, pretrain_epochs: 2, label_fractions: [0.5], probe_steps: 2, batch_size: 5}}
runtime: {{device: cpu, progress: false, tensorboard: false, num_threads: 1}}
"""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny pipeline run through the command line: (config path, output dir)."""
    root = tmp_path_factory.mktemp("mkdt")
    _write_images(root / "data")
    config = root / "tiny.yaml"
    config.write_text(TINY.format(out=root / "runs", data=root / "data", cache=root / "cache"))
    for stage in ("teacher", "experts", "select", "distill"):
        assert main(["dataset-distill", stage, str(config)]) == 0, stage
    for source in ("mkdt", "random", "high_loss", "none"):
        assert main(["dataset-distill", "eval", str(config), f"eval.source={source}"]) == 0, source
    return config, root / "runs"


def test_tiny_pipeline_through_the_command_line(pipeline: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    config, runs = pipeline
    base = runs / "tiny"
    reps = load_checkpoint(base / "teacher/seed0/representations.pt")
    assert reps["representations"].shape == (40, 64)  # resnet8's embedding of every image
    assert len(expert_files(base / "experts/seed0")) == 2
    trajectory = load_checkpoint(base / "experts/seed0/experts/expert_000.pt")["trajectory"]
    assert trajectory.shape[0] == 3 + 1
    selected = load_checkpoint(base / "select/seed0/high_loss.pt")
    assert selected["indices"]["25pct"].numel() == 10
    distilled = load_checkpoint(base / "distill-high_loss-25pct/seed0/distilled.pt")
    assert distilled["images"].shape == (10, 3, 16, 16) and distilled["losses"].numel() == 4
    assert not torch.equal(distilled["images"], _normalised_subset(config, selected["indices"]["25pct"]))
    assert (base / "distill-high_loss-25pct/seed0/distilled.png").stat().st_size > 0
    assert (base / "distill-high_loss-25pct/seed0/match_loss.png").stat().st_size > 0
    for label in ("eval-mkdt-25pct", "eval-random-25pct", "eval-high_loss-25pct", "eval-none"):
        summary = json.loads((base / label / "seed0/summary.json").read_text())
        assert 0 <= summary["probe_top1_50pct"] <= 100, label
    mkdt = json.loads((base / "eval-mkdt-25pct/seed0/summary.json").read_text())
    assert mkdt["pretrain_lr"] == pytest.approx(distilled["syn_lr"])  # the learned step size
    assert main(["dataset-distill", "report", str(runs)]) == 0
    assert "eval-mkdt-25pct" in capsys.readouterr().out


def _normalised_subset(config: Path, idx: torch.Tensor) -> torch.Tensor:
    from socratic.distill_data.inputs import load_pretraining_set

    return load_pretraining_set(load_mkdt_config(config)).normalised()[idx]


class _Stop(Exception):
    pass


def _stop_after_first(epoch: int, metrics: dict) -> None:
    if epoch == 1:
        raise _Stop


@pytest.mark.parametrize("stage,label,artefact", [
    ("teacher", "teacher", "representations.pt"),
    ("experts", "experts", "experts/expert_001.pt"),
    ("select", "select", "high_loss.pt"),
    ("distill", "distill-high_loss-25pct", "distilled.pt"),
    ("eval", "eval-mkdt-25pct", None),
])
def test_every_stage_resumes_to_the_uninterrupted_result(pipeline: tuple[Path, Path], tmp_path: Path, stage: str,
                                                        label: str, artefact: str | None) -> None:
    config, runs = pipeline
    cfg = load_mkdt_config(config, [f"output_dir={tmp_path}", f"source_dir={runs / 'tiny'}"])
    if stage == "select":  # one epoch: a resume of the finished run has nothing left to do
        first = run_stage(stage, cfg)
        again = run_stage(stage, cfg, resume=True)
        assert again["epochs"] == first["epochs"] == 1
    else:
        with pytest.raises(_Stop):
            run_stage(stage, cfg, epoch_callbacks=[_stop_after_first])
        run_stage(stage, cfg, resume=True)
    resumed, uninterrupted = stage_dir(cfg, stage), runs / "tiny" / label / "seed0"
    assert resumed.parent.name == label
    if artefact is None:
        a = json.loads((resumed / "summary.json").read_text())
        b = json.loads((uninterrupted / "summary.json").read_text())
        assert a["probe_top1_50pct"] == b["probe_top1_50pct"]
        a, b = load_checkpoint(resumed / "checkpoints/last.pt"), load_checkpoint(uninterrupted / "checkpoints/last.pt")
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        return
    a, b = load_checkpoint(resumed / artefact), load_checkpoint(uninterrupted / artefact)
    for key, value in b.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(a[key], value), key


def test_a_stage_before_the_one_it_needs_exits_2_naming_file_and_command(tmp_path: Path, pipeline: tuple[Path, Path],
                                                                        capsys: pytest.CaptureFixture) -> None:
    config, _ = pipeline
    assert main(["dataset-distill", "distill", str(config), f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "teacher/seed0/representations.pt is missing" in err
    assert f"socratic dataset-distill teacher {config} output_dir={tmp_path}" in err
    assert not (tmp_path / "tiny").exists()  # no half-written run folder
    assert main(["dataset-distill", "eval", str(config), f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "distill-high_loss-25pct/seed0/distilled.pt is missing" in err
    assert "socratic dataset-distill distill" in err


def test_an_unfinished_stage_is_named_with_its_resume_command(tmp_path: Path, pipeline: tuple[Path, Path],
                                                             capsys: pytest.CaptureFixture) -> None:
    config, runs = pipeline
    folder = tmp_path / "tiny" / "teacher" / "seed0"
    folder.mkdir(parents=True)
    (folder / "representations.pt").write_bytes((runs / "tiny/teacher/seed0/representations.pt").read_bytes())
    assert main(["dataset-distill", "experts", str(config), f"output_dir={tmp_path}"]) == 2
    assert "has not finished (no summary.json)" in capsys.readouterr().err


def test_bad_values_name_their_key() -> None:
    with pytest.raises(Exception, match="distill.meta_grad"):
        mkdt_config_from_dict({"distill": {"meta_grad": "fast"}})
    with pytest.raises(Exception, match="experts.epochs"):
        mkdt_config_from_dict({"experts": {"epochs": 2}, "distill": {"max_start_epoch": 2}})
    with pytest.raises(Exception, match="unknown config key 'distill.lr_images'"):
        mkdt_config_from_dict({"distill": {"lr_images": 1}})
    with pytest.raises(Exception, match="two views"):
        mkdt_config_from_dict({"data": {"augment": {"name": "crop_flip"}}})


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    cfg = load_mkdt_config(path)
    assert cfg.student.name == "convnet"


def test_the_distillation_learning_rates_can_be_searched(pipeline: tuple[Path, Path], tmp_path: Path) -> None:
    from socratic.config import ConfigError
    from socratic.search import run_search

    config, runs = pipeline
    space = Path(__file__).resolve().parents[1] / "configs" / "search" / "mkdt_distill_lrs.yaml"
    result = run_search(config, space, [f"output_dir={tmp_path}", f"source_dir={runs / 'tiny'}",
                                        "distill.iterations=2"],
                        n_trials=2, sampler="random", pruner="none", seed=0, heartbeat=0, kind="dataset-distill")
    trials = sorted(tmp_path.glob("*/trial*/distill-high_loss-25pct/seed0/summary.json"))
    assert len(trials) == 2 and result["best_value"] is not None
    import yaml

    configs = [yaml.safe_load((t.parent / "config.yaml").read_text()) for t in trials]
    lrs = {c["distill"]["lr_img"] for c in configs}
    values = [json.loads(t.read_text())["match_loss_last_epoch"] for t in trials]
    assert result["best_value"] == pytest.approx(min(values))  # the matching loss is minimised
    assert len(lrs) == 2
    with pytest.raises(ConfigError, match="source_dir"):
        run_search(config, space, [f"output_dir={tmp_path / 'x'}"], n_trials=1, kind="dataset-distill")


def test_ssl_views_are_two_seeded_views_and_the_identity_without_randomness() -> None:
    from socratic.data import build_augment

    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    views = build_augment("ssl_views")
    a = views(images, torch.Generator().manual_seed(3))
    b = views(images, torch.Generator().manual_seed(3))
    assert a.shape == (8, 3, 16, 16) and torch.equal(a, b)
    assert not torch.equal(a[:4], a[4:])  # the two views draw their own crops and colours
    assert 0 <= float(a.min()) and float(a.max()) <= 255
    plain = build_augment({"name": "ssl_views", "scale": [1.0, 1.0], "ratio": [1.0, 1.0], "flip": False,
                           "jitter_prob": 0.0, "grayscale_prob": 0.0})
    torch.testing.assert_close(plain(images, torch.Generator().manual_seed(0)), images.float().repeat(2, 1, 1, 1),
                               rtol=0, atol=1e-3)  # float rounding of the identity resampling on the 0..255 scale
    gray = build_augment({"name": "ssl_views", "scale": [1.0, 1.0], "ratio": [1.0, 1.0], "flip": False,
                          "jitter_prob": 0.0, "grayscale_prob": 1.0})(images, None)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
