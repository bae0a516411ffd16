"""Multi-teacher distillation: weighting rules against hand-computed values, MTKD-RL's agent, the teacher pool,
Disagreement Augmentation against the weighted ensemble, and tiny end-to-end runs (aver, mtkd_rl, resume)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from socratic.augment import DisagreementAugmentation
from socratic.cli import main
from socratic.config import ConfigError, config_from_dict
from socratic.context import TrainContext
from socratic.engine.checkpoint import CheckpointError
from socratic.multiteacher.options import AgentOptions
from socratic.distillers import create_distiller
from socratic.engine.logger import read_metrics
from socratic.experiment import run_experiment
from socratic.losses import fitnet_loss, kd_loss
from socratic.models import create_model
from socratic.multiteacher import (
    BatchView,
    MTKDRLStrategy,
    TeacherPool,
    average_weights,
    check_class_counts,
    confidence_weights,
    entropy_weights,
    gradient_space_weights,
    head_logits,
)
from socratic.multiteacher.agent import normalized_rewards, paper_rewards, reference_rewards
from socratic.multiteacher.plot import plot_teacher_weights
from socratic.multiteacher.strategies import kd_logit_gradients

METHODS = ("aver", "ebkd", "camkd", "aekd", "mtkd_rl")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _distiller(method: str, teachers: list[torch.nn.Module] | None = None, **options):
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=10, in_channels=1)
    if teachers is None:
        teachers = [create_model("resnet8", num_classes=10, in_channels=1),
                    create_model("wrn_16_1", num_classes=10, in_channels=1)]
    return create_distiller(method, student, teachers, **options).train()


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(8, 1, 28, 28, generator=generator), torch.randint(0, 10, (8,), generator=generator)


# ------------------------------------------------------------------------------------------ the rules
def test_entropy_weights_match_hand_computed_values() -> None:
    # teacher 0 is unsure (p = [0.5, 0.5]), teacher 1 confident (p = [0.9, 0.1]): logits = log p
    logits = torch.tensor([[[math.log(0.5), math.log(0.5)]], [[math.log(0.9), math.log(0.1)]]])
    h0, h1 = math.log(2), -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    w = entropy_weights(logits, temperature=1.0)
    assert w.shape == (1, 2)
    assert w[0].tolist() == pytest.approx([1 - h0 / (h0 + h1), 1 - h1 / (h0 + h1)], abs=1e-6)
    assert w[0, 1] > w[0, 0]  # the confident teacher counts more
    three = entropy_weights(torch.randn(3, 5, 7))
    assert torch.allclose(three.sum(dim=1), torch.full((5,), 2.0))  # M - 1, as the reference implementation


def test_confidence_weights_order_and_values() -> None:
    ce = torch.tensor([[0.1, 1.0, 2.0], [2.0, 0.1, 1.0]])
    w = confidence_weights(ce)
    e = [math.exp(v) for v in (0.1, 1.0, 2.0)]
    expected = [(1 - v / sum(e)) / 2 for v in e]
    assert w[0].tolist() == pytest.approx(expected, abs=1e-6)
    assert torch.allclose(w.sum(dim=1), torch.ones(2))
    assert w[0, 0] > w[0, 1] > w[0, 2] and w[1, 1] > w[1, 2] > w[1, 0]  # lower CE -> higher weight
    assert torch.equal(average_weights(2, 4), torch.full((2, 4), 0.25))  # AVER


def test_aekd_weights_solve_the_min_norm_problem_and_respect_c() -> None:
    # orthogonal gradients (1, 0) and (0, 2): min_a a^2 + 4 (1 - a)^2 at a = 0.8
    grads = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]])  # (M, B=1, C)
    assert gradient_space_weights(grads, c=1.0).tolist() == pytest.approx([0.8, 0.2], abs=1e-3)
    assert gradient_space_weights(grads, c=0.6).tolist() == pytest.approx([0.6, 0.4], abs=1e-3)
    torch.manual_seed(0)
    many = torch.randn(4, 16, 10)
    many[0] *= 1e-3  # a nearly-zero gradient would take all the weight without the bound
    w = gradient_space_weights(many, c=0.6)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-5) and float(w.max()) <= 0.6 + 1e-5 and float(w.min()) >= 0


def test_kd_logit_gradients_are_the_autograd_gradients() -> None:
    torch.manual_seed(0)
    student, teachers = torch.randn(5, 7, requires_grad=True), torch.randn(2, 5, 7)
    closed = kd_logit_gradients(student.detach(), teachers, 4.0)
    for m in range(2):
        (grad,) = torch.autograd.grad(kd_loss(student, teachers[m], 4.0), student)
        assert torch.allclose(closed[m], grad, atol=1e-6)


def test_paper_and_reference_rewards() -> None:
    rewards = torch.tensor([[-1.0, -2.0, -4.0], [-3.0, -3.0, -3.0]])
    normalised = normalized_rewards(rewards)
    assert normalised[0].tolist() == pytest.approx([4 / 9, 1 / 9, -5 / 9], abs=1e-6)  # Eq. (7), centred
    assert normalised[1].tolist() == pytest.approx([0.0, 0.0, 0.0])
    assert normalized_rewards(rewards, literal=True)[0].tolist() == pytest.approx([1 + 7 / 3, 2 / 3 + 7 / 3, 7 / 3])
    ce, kl, mse = torch.tensor([0.5]), torch.tensor([[1.0, 2.0]]), torch.tensor([[0.1, 0.2]])
    assert paper_rewards(ce, kl, mse, 1.0, 5.0)[0].tolist() == pytest.approx([-2.0, -3.5])  # Eq. (5)
    ref = reference_rewards(torch.tensor([0.1, 0.5, 3.0]), torch.zeros(3, 2), None, torch.ones(3, 2),
                            torch.ones(3, 2), 1.0, 5.0)
    assert ref.shape == (3, 1) and float(ref.min()) >= 0 and float(ref.max()) <= 1 and float(ref[2]) == 0


# ----------------------------------------------------------------------------------- the distiller
def test_every_method_trains_one_step() -> None:
    x, y = _batch()
    for method in METHODS:
        distiller = _distiller(method)
        logits, losses = distiller.forward_train(x, y, TrainContext())  # MTKD-RL needs the epoch
        assert set(losses) == {"ce", "kd", "feat"} and all(torch.isfinite(v) for v in losses.values()), method
        sum(losses.values()).backward()
        assert distiller.regressors[0].conv.weight.grad is not None
        assert all(p.grad is None for t in distiller.teachers for p in t.parameters())
        metrics = distiller.epoch_metrics()
        assert {"w_logit_0", "w_logit_1", "w_feat_0", "w_feat_1"} <= set(metrics), method
    rl = _distiller("mtkd_rl")
    assert set(rl.extra_modules()) == {"regressors", "agent"} and "agent" not in rl.trainable_modules()
    assert set(_distiller("aver", feature_loss=False).forward_train(x, y)[1]) == {"ce", "kd"}


def test_equal_weights_reproduce_aver_exactly() -> None:
    x, y = _batch()
    aver = _distiller("aver")
    _, losses = aver.forward_train(x, y)
    with torch.no_grad():
        s = aver.student.forward_features(x)
        kd = sum(kd_loss(s.logits, t(x), 4.0) for t in aver.teachers) / 2
        feats = [t.forward_features(x).stages[-1] for t in aver.teachers]
        feat = sum(fitnet_loss(r(s.stages[-1], f.shape[-2:]), f) for r, f in zip(aver.regressors, feats)) / 2
    assert losses["kd"].item() == pytest.approx(kd.item(), rel=1e-5)
    assert losses["feat"].item() == pytest.approx(5.0 * feat.item(), rel=1e-5)
    # two copies of one teacher: CA-MKD's confidence weights are 1/M, so (without the reference's extra 1/M)
    # CA-MKD's loss is AVER's
    torch.manual_seed(1)
    teacher = create_model("resnet8", num_classes=10, in_channels=1)
    twins = [teacher, teacher]
    ca = _distiller("camkd", twins, reference_scale=False, camkd_feature_weights="equal")
    av = _distiller("aver", twins)
    ca_losses, av_losses = ca.forward_train(x, y)[1], av.forward_train(x, y)[1]
    assert all(torch.equal(ca_losses[k], av_losses[k]) for k in av_losses)


def test_camkd_head_is_each_zoo_models_own_head() -> None:
    x = torch.randn(2, 3, 32, 32)
    for name in ("resnet8", "wrn_16_1", "regnetx_200mf", "ShuffleV1", "ShuffleV2", "mobile_half", "vgg8"):
        torch.manual_seed(0)
        model = create_model(name, num_classes=10).eval()
        with torch.no_grad():
            features = model.forward_features(x)
            assert torch.allclose(head_logits(model, features.stages[-1]), features.logits, atol=1e-5), name


def test_state_dimensions_of_the_papers_pool() -> None:
    with torch.device("meta"):
        pool = TeacherPool([create_model(n, num_classes=100)
                            for n in ("regnety_400mf", "regnetx_400mf", "resnet32x4", "wrn_28_4")])
    assert pool.num_classes == 100 and pool.embedding_dims == [384, 384, 256, 256]
    assert pool.state_dims(100) == [487, 487, 359, 359] and sum(pool.state_dims(100)) == 1692  # reference: 1692
    rl = _distiller("mtkd_rl")  # resnet8 and wrn_16_1 on 10 classes: 64 + 10 + 3 each
    assert rl.strategy.agent.state_dims == [77, 77]


def test_a_pool_that_disagrees_on_the_class_count_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"disagrees on the number of classes \(a has 10, b has 100\)"):
        check_class_counts([10, 100], ["a", "b"])
    teachers = [create_model("resnet8", num_classes=10, in_channels=1),
                create_model("resnet8", num_classes=100, in_channels=1)]
    with pytest.raises(ValueError, match=r"teachers.0 \(CifarResNet\) has 10, teachers.1 \(CifarResNet\) has 100"):
        _distiller("aver", teachers)


# -------------------------------------------------------------------------------------------- MTKD-RL
def _toy_batch(generator: torch.Generator, good: int = 0) -> BatchView:
    """Two teachers; teacher `good` is consistently closer to the student (lower KL and feature MSE)."""
    b, m, c = 32, 2, 10
    kl = torch.rand(b, m, generator=generator) + 1.0
    kl[:, good] -= 0.9
    mse = torch.rand(b, m, generator=generator) * 0.1 + 0.2
    mse[:, good] -= 0.15
    return BatchView(labels=torch.randint(0, c, (b,), generator=generator), student_logits=torch.randn(b, c),
                     teacher_logits=torch.randn(m, b, c, generator=generator),
                     teacher_embeddings=[torch.randn(b, 8, generator=generator) for _ in range(m)], kl=kl,
                     teacher_ce=torch.rand(b, m, generator=generator), student_ce=torch.rand(b, generator=generator),
                     temperature=4.0, feature_mse=mse, cosine=torch.rand(b, m, generator=generator) * 2 - 1)


@pytest.mark.parametrize("layout", ["per_teacher", "shared"])
def test_agent_update_raises_the_better_teachers_weight(layout: str) -> None:
    torch.manual_seed(0)
    strategy = MTKDRLStrategy([8 + 10 + 3] * 2, AgentOptions(layout=layout, warmup_epochs=0, combine="none"))
    generator = torch.Generator().manual_seed(0)
    batches = [_toy_batch(generator) for _ in range(20)]
    before = torch.stack([strategy(b)[0][:, 0] for b in batches]).mean()
    for batch in batches:
        w_logit, w_feat = strategy(batch)
        strategy.observe(batch, w_logit, w_feat)
    strategy.on_epoch_end(1)
    after_logit = torch.stack([strategy(b)[0][:, 0] for b in batches]).mean()
    after_feat = torch.stack([strategy(b)[1][:, 0] for b in batches]).mean()
    assert after_logit > before + 0.05 and after_feat > 0.55
    assert strategy.epoch_metrics()["agent_updates"] == 1.0 and not strategy.history


def test_warmup_uses_weights_one_then_the_combined_action() -> None:
    strategy = MTKDRLStrategy([21, 21], AgentOptions(warmup_epochs=1))
    batch = _toy_batch(torch.Generator().manual_seed(1))
    w_logit, w_feat = strategy(batch)
    assert torch.equal(w_logit, torch.ones(32, 2)) and torch.equal(w_feat, torch.ones(32, 2))  # Algorithm 1
    strategy.observe(batch, w_logit, w_feat)
    strategy.on_epoch_end(1)  # agent pre-training on the warm-up history
    w_logit, w_feat = strategy(batch)
    assert torch.allclose(w_logit.sum(dim=1), torch.ones(32)) and torch.allclose(w_feat.sum(dim=1), torch.ones(32))


# ------------------------------------------------------------------------------------------------- DA
def test_da_against_the_weighted_ensemble() -> None:
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=10, in_channels=1).train()
    teachers = [create_model(n, num_classes=10, in_channels=1).eval() for n in ("resnet8", "wrn_16_1")]
    x = torch.randn(4, 1, 28, 28)
    one_hot = DisagreementAugmentation(prob=1.0, target="weighted", teacher_weights=lambda _: torch.tensor([0.0, 3.0]))
    first = DisagreementAugmentation(prob=1.0, target=1)
    assert torch.allclose(one_hot.perturb(x, student, teachers), first.perturb(x, student, teachers), atol=1e-6)
    none_yet = DisagreementAugmentation(prob=1.0, target="weighted", teacher_weights=lambda _: None)
    mean = DisagreementAugmentation(prob=1.0, target="mean")
    assert torch.equal(none_yet.perturb(x, student, teachers), mean.perturb(x, student, teachers))
    per_sample = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    weighted = DisagreementAugmentation(prob=1.0, target="weighted", teacher_weights=lambda _: per_sample)
    assert weighted._ensemble_weights(x, 2)[2].tolist() == [0.5, 0.5]
    assert weighted.perturb(x, student, teachers).shape == x.shape


# --------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def pool_run(tiny_fashion: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two tiny teachers trained for one epoch, and a base config distilling from both."""
    root = tmp_path_factory.mktemp("multiteacher")
    base = {
        "output_dir": str(root / "runs"),
        "data": {"name": "fashion_mnist", "root": str(tiny_fashion), "batch_size": 50, "eval_batch_size": 200,
                 "train_subset": 100, "cache_dir": str(root / "cache")},
        "method": {"name": "ce"},
        "optim": {"epochs": 1, "lr": 0.05, "schedule": "constant"},
        "runtime": {"device": "cpu", "progress": False, "deterministic": True, "tensorboard": False,
                    "eval_every": 100, "num_threads": 1},
    }
    checkpoints = []
    for name in ("resnet8", "wrn_16_1"):
        run_experiment(config_from_dict({**base, "name": f"teacher_{name}", "student": {"name": name}}))
        checkpoints.append(str(root / "runs" / f"teacher_{name}" / "seed0" / "checkpoints" / "last.pt"))
    config = {**base, "student": {"name": "resnet8"},
              "teachers": [{"name": n, "checkpoint": c} for n, c in zip(("resnet8", "wrn_16_1"), checkpoints)]}
    return {"config": config, "root": root}


def _run_dir(config: dict) -> Path:
    return Path(config["output_dir"]) / config["name"] / f"seed{config.get('seed', 0)}"


def test_distill_aver_from_the_command_line(pool_run: dict) -> None:
    config = {**pool_run["config"], "name": "aver", "method": {"name": "aver"}}
    path = pool_run["root"] / "aver.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["distill", str(path), "da.enabled=true", "da.target=weighted", "da.prob=1.0"]) == 0
    (metrics,) = read_metrics(_run_dir(config) / "metrics.jsonl")
    assert metrics["w_logit_0"] == pytest.approx(0.5) and metrics["w_feat_1"] == pytest.approx(0.5)
    assert metrics["train_feat"] > 0 and metrics["peak_memory_mb"] > 0 and metrics["da_perturbed"] == 1.0


def test_mtkd_rl_run_resumes_with_its_agent(pool_run: dict) -> None:
    base = {**pool_run["config"], "method": {"name": "mtkd_rl", "agent": {"optimizer": "adam", "lr": 0.01}},
            "optim": {**pool_run["config"]["optim"], "epochs": 3}}
    path = pool_run["root"] / "mtkd_rl.yaml"
    path.write_text(yaml.safe_dump(base))
    assert main(["distill", str(path), "name=full"]) == 0
    full = json.loads((_run_dir({**base, "name": "full"}) / "summary.json").read_text())
    metrics = read_metrics(_run_dir({**base, "name": "full"}) / "metrics.jsonl")
    assert [m["w_logit_0"] for m in metrics][0] == 1.0  # warm-up epoch: weights 1 (Algorithm 1)
    assert all(0 < m["w_logit_0"] < 1 and m["agent_updates"] == 1 for m in metrics[1:])
    assert "agent_loss" in metrics[0] and "reward_1" in metrics[0]  # the agent is pre-trained after epoch 1
    png = plot_teacher_weights(_run_dir({**base, "name": "full"}))
    assert png.read_bytes()[:4] == b"\x89PNG"

    class Killed(Exception):
        pass

    def kill(epoch: int, step: int) -> None:
        if epoch == 3 and step == 0:
            raise Killed

    with pytest.raises(Killed):
        run_experiment(config_from_dict({**base, "name": "resumed"}), callbacks=[kill])
    state = torch.load(_run_dir({**base, "name": "resumed"}) / "checkpoints" / "last.pt", weights_only=True)
    agent_state = state["extra"]["agent"]["_extra_state"]
    assert agent_state["epochs_done"] == 2 and agent_state["optimizer"]["state"]  # Adam moments are saved
    resumed = run_experiment(config_from_dict({**base, "name": "resumed"}), resume=True)
    assert resumed["last_top1"] == full["last_top1"]
    a = read_metrics(_run_dir({**base, "name": "full"}) / "metrics.jsonl")
    b = read_metrics(_run_dir({**base, "name": "resumed"}) / "metrics.jsonl")
    assert [m["train_loss"] for m in a] == [m["train_loss"] for m in b]
    assert [m["w_logit_1"] for m in a] == [m["w_logit_1"] for m in b]
    wa = torch.load(_run_dir({**base, "name": "full"}) / "checkpoints" / "last.pt", weights_only=True)["extra"]
    wb = torch.load(_run_dir({**base, "name": "resumed"}) / "checkpoints" / "last.pt", weights_only=True)["extra"]
    assert all(torch.equal(wa["agent"][k], wb["agent"][k]) for k in wa["agent"] if k != "_extra_state")
    assert json.loads((_run_dir({**base, "name": "resumed"}) / "summary.json").read_text())["epochs"] == 3


def test_pool_config_errors(pool_run: dict) -> None:
    config = pool_run["config"]
    one = {**config, "name": "one", "method": {"name": "aver"}, "teachers": config["teachers"][:1]}
    with pytest.raises(ConfigError, match=r"method.name 'aver' takes >= 2 teacher\(s\) \(entries in teachers\), got 1"):
        config_from_dict(one)
    with pytest.raises(ConfigError, match="method.agent.layout: 'joint' is not one of per_teacher, shared"):
        config_from_dict({**config, "method": {"name": "mtkd_rl", "agent": {"layout": "joint"}}})
    with pytest.raises(ConfigError, match="unknown config key 'method.kd_weight'; valid keys for method 'aver'"):
        config_from_dict({**config, "method": {"name": "aver", "kd_weight": 0.5}})
    with pytest.raises(ConfigError, match="da.target=weighted needs a multi-teacher method"):
        config_from_dict({**config, "method": {"name": "kd"}, "teachers": config["teachers"][:1],
                          "da": {"enabled": True, "target": "weighted"}})
    state = torch.load(config["teachers"][1]["checkpoint"], weights_only=True)
    state["meta"]["num_classes"] = 100
    hundred = pool_run["root"] / "hundred.pt"
    torch.save(state, hundred)
    teachers = [config["teachers"][0], {**config["teachers"][1], "checkpoint": str(hundred)}]
    bad = config_from_dict({**config, "name": "bad", "method": {"name": "aver"}, "teachers": teachers})
    with pytest.raises(CheckpointError, match=r"teachers.1 \(wrn_16_1\): checkpoint .* was trained for 100 classes"):
        run_experiment(bad)
    assert not (Path(config["output_dir"]) / "bad").exists()


def test_report_groups_single_teacher_runs_with_or_without_the_section() -> None:
    from socratic.config import config_to_dict
    from socratic.reports import _group_key

    kd = config_to_dict(config_from_dict({"method": {"name": "kd"},
                                          "teachers": [{"name": "resnet8", "checkpoint": "t.pt"}]}))
    old = {k: v for k, v in kd.items() if k != "search"}  # a run saved before the section existed
    old["multiteacher"] = {"alpha": 1.0}  # ... in socratic 0.1's layout
    old["method"] = {**kd["method"], "hint_weight": 100.0, "hint_layer": 2}
    assert _group_key(kd) == _group_key(old)
    pool = {**kd, "teachers": kd["teachers"] * 2, "method": {"name": "aver"}}
    assert _group_key(pool) != _group_key({**pool, "method": {"name": "aver", "beta": 1.0}})
