"""The distiller contract: a student, frozen teachers, and any trainable extras; `METHODS` registers each method.

A method used in a plain PyTorch loop checks how it is used (`usage.py`): trainable extras that no stepped
optimiser holds, or an epoch hook that was not called, raise `DistillerUsageError` on the next step. The run
skeleton's `Trainer` optimises every trainable module and calls `on_epoch_end` itself, so it turns the checks off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from socratic.context import KnownTeacherLogits, TrainContext
from socratic.distillers.usage import UsageCheck
from socratic.models.features import Features
from socratic.registry import METHODS, Options

# @register_distiller("kd", options=KDOptions, teachers=(1, 1)); `features=True`: the method reads
# forward_features() of its models (create_distiller wraps a plain nn.Module for it, socratic.models.external);
# `da_targets="peers"`: a method without teachers whose options field `peers` lists the models Disagreement
# Augmentation disagrees with (`Distiller.disagreement_targets`, checked by the config loader)
register_distiller = METHODS.register


def _checked_forward_train(forward_train: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(forward_train)
    def forward_train_checked(self: "Distiller", x: Tensor, y: Tensor, ctx: TrainContext | None = None) -> Any:
        if self.usage_checks:
            self.usage_check.before_step(self, ctx)
        return forward_train(self, x, y, ctx)

    return forward_train_checked


def _recorded_epoch_end(on_epoch_end: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(on_epoch_end)
    def on_epoch_end_recorded(self: "Distiller", epoch: int) -> Any:
        result = on_epoch_end(self, epoch)
        self.usage_check.epoch_ended(epoch)
        return result

    return on_epoch_end_recorded


class TeacherReplay:
    """The teachers' outputs on one loader batch: replayed from a teacher-output cache, or recorded for it.

    `batch` is the tensor the loader yielded; only a call on that very tensor, unchanged since (same object, same
    version counter), is served, so a batch that an augmentation replaced (a DA-perturbed batch) or edited in place
    always runs the teachers live. `replayed` maps a teacher's index to its cached outputs by field name
    (`logits`, `embedding`, `stage<i>`, `preact<i>`); `wanted` names, per teacher, the fields to record from a
    live call on the batch. Filled and read by `socratic.engine.teacher_cache`; methods only call
    `Distiller.teacher_outputs` (or `teacher_features`).
    """

    def __init__(self, batch: Tensor, replayed: dict[int, dict[str, Tensor]] | None = None,
                 wanted: dict[int, tuple[str, ...]] | None = None,
                 lossy: Callable[[str, Tensor], Tensor] | None = None) -> None:
        self.batch = batch
        self.lossy = lossy  # what storage does to a field (top-k logits), applied to live outputs on the batch too
        self.version = batch._version
        self.replayed = replayed or {}
        self.wanted = wanted or {}
        self.recorded: dict[int, dict[str, Tensor]] = {}
        self.served: set[int] = set()  # the teachers whose outputs were served from the cache

    def serves(self, x: Tensor) -> bool:
        """Whether `x` is the loader's batch, untouched."""
        return x is self.batch and x._version == self.version

    def lookup(self, index: int, fields: Sequence[str]) -> dict[str, Tensor] | None:
        record = self.replayed.get(index)
        if record is None or not all(f in record for f in fields):
            return None
        self.served.add(index)
        return {f: record[f] for f in fields}

    def store(self, index: int, outputs: dict[str, Tensor]) -> None:
        if index in self.wanted and index not in self.recorded:
            self.recorded[index] = {f: outputs[f] for f in self.wanted[index]}

    def missing(self) -> list[int]:
        """Teachers whose outputs are wanted but were not recorded (the method saw another batch, e.g. DA's)."""
        return [i for i in self.wanted if i not in self.recorded]


def feature_fields(model: nn.Module, stages: Sequence[int] = (), *, preact: bool = False, embedding: bool = False,
                   logits: bool = False) -> tuple[str, ...]:
    """The cache fields of these outputs of `model` (`Distiller.teacher_features`, `teacher_cache_fields`):
    `stage<i>` (`preact<i>`: before the stage's last ReLU) for each index in `stages` (negative ones made
    absolute), then `embedding` and `logits` when asked for."""
    prefix = "preact" if preact else "stage"
    fields = [f"{prefix}{i % len(model.stage_channels)}" for i in stages]
    return (*fields, *(["embedding"] if embedding else []), *(["logits"] if logits else []))


@torch.no_grad()
def compute_teacher_outputs(teacher: nn.Module, x: Tensor, fields: Sequence[str]) -> dict[str, Tensor]:
    """A teacher's outputs on `x` by field: `logits` (`teacher(x)` when nothing else is asked), `embedding`,
    `stage<i>` and `preact<i>` (from `forward_features`, with `preact=True` when a pre-ReLU map is asked)."""
    if all(f == "logits" for f in fields):
        return {"logits": teacher(x)}
    preact = any(f.startswith("preact") for f in fields)
    features = teacher.forward_features(x, preact=True) if preact else teacher.forward_features(x)
    out: dict[str, Tensor] = {}
    for name in fields:
        if name == "logits":
            out[name] = features.logits
        elif name == "embedding":
            out[name] = features.embedding
        elif name.startswith("stage"):
            out[name] = features.stages[int(name[5:])]
        elif name.startswith("preact"):
            out[name] = features.preact_stages[int(name[6:])]
        else:
            raise ValueError(f"unknown teacher output field {name!r} (logits, embedding, stage<i> or preact<i>)")
    return out


class Distiller(nn.Module):
    """Base class of every method.

    `forward_train(x, y, ctx)` returns the student's logits and a dict of named, already weighted losses; the
    run skeleton sums them. `ctx` (a `TrainContext`: epoch, step, epochs, steps per epoch) is where a method
    takes its warm-ups and schedules from, so they are exact on resume. `forward(x)` is the student alone
    (evaluation). Teachers are frozen and stay in eval mode whatever `train()` is called with.

    A method registers its class with its options dataclass and metadata `teachers=(min, max)` (max None: no
    upper bound); `from_options` builds it, by default passing every option as a keyword argument.

    Used outside the run skeleton, every `forward_train` first checks the loop around it (`usage_checks`,
    `socratic.distillers.usage`): a trainable extra (a regressor) that got gradients but is in no optimiser
    that stepped the student, or an epoch hook (`on_epoch_end`, MTKD-RL's agent update) not called when
    `ctx.epoch` changed, is a `DistillerUsageError`. The `Trainer` sets `usage_checks = False`.
    """

    usage_checks: bool = True  # off in socratic.engine.trainer.Trainer, which cannot forget either

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "forward_train" in cls.__dict__:
            cls.forward_train = _checked_forward_train(cls.__dict__["forward_train"])
        if "on_epoch_end" in cls.__dict__:
            cls.on_epoch_end = _recorded_epoch_end(cls.__dict__["on_epoch_end"])

    teacher_replay: TeacherReplay | None = None  # set by the training step while a teacher-output cache is on

    def __init__(self, student: nn.Module, teachers: nn.Module | Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.student = student
        self.teachers = nn.ModuleList(as_model_list(teachers))
        for teacher in self.teachers:
            teacher.requires_grad_(False)
            teacher.eval()
        self._known_teacher_logits: KnownTeacherLogits | None = None

    @classmethod
    def from_options(cls, options: Options, student: nn.Module, teachers: Sequence[nn.Module]) -> "Distiller":
        """Build the method from its (checked) options."""
        kwargs = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name != "name"}
        return cls(student, teachers, **kwargs)

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        self.teachers.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def epoch_metrics(self) -> dict[str, float]:
        """Method-specific numbers for the epoch just finished (logged by the trainer), then reset."""
        return {}

    def on_epoch_end(self, epoch: int) -> None:
        """Called by the trainer after the last step of `epoch` (1-indexed), before its metrics are read and
        the checkpoint is written: learning extras that update once per epoch (MTKD-RL's agent) do it here."""

    @property
    def needs_epoch_end(self) -> bool:
        """Whether `on_epoch_end` does something (then a loop must call it after each epoch's last step)."""
        return type(self).on_epoch_end is not Distiller.on_epoch_end

    @property
    def method_name(self) -> str:
        """The registered name of this method (its class name if it is not registered), for messages."""
        return next((e.name for e in METHODS.entries() if e.factory is type(self)), type(self).__name__)

    @property
    def usage_check(self) -> UsageCheck:
        """The state of the usage checks (created on first use)."""
        check = self.__dict__.get("_usage_check")
        if check is None:
            check = self.__dict__["_usage_check"] = UsageCheck()
        return check

    def extra_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters beyond the student's that the loop's optimiser must update (the extras in
        `trainable_modules`): `optimizer.add_param_group({"params": distiller.extra_parameters()})`."""
        return [p for name, m in self.trainable_modules().items() if name != "student"
                for p in m.parameters() if p.requires_grad]

    def extra_modules(self) -> dict[str, nn.Module]:
        """Trainable modules beyond the student (regressors, agents): checkpointed with it, and optimised with
        it unless `trainable_modules` leaves them out (a module with its own optimizer, e.g. an RL agent)."""
        return {}

    def trainable_modules(self) -> dict[str, nn.Module]:
        """The modules whose parameters the trainer's optimizer updates."""
        return {"student": self.student, **self.extra_modules()}

    def optimizer_groups(self) -> dict[str, list[nn.Module]]:
        """The trainable modules by optimiser: the trainer builds one optimiser (of `optim`) per entry, steps each
        on every batch and checkpoints each. One group for a teacher -> student method; one per peer for DML."""
        return {"student": list(self.trainable_modules().values())}

    def evaluated_models(self) -> dict[str, nn.Module]:
        """Models evaluated beside the student each time it is (DML's other peers), by name; {} by default."""
        return {}

    def bind_train_set(self, labels: Tensor) -> None:
        """Called once before training (and before a resume restores the state) with the training set's labels
        by dataset index, for a method that keeps per-sample state (CRD's memory bank); nothing by default."""

    def disagreement_targets(self) -> list[nn.Module]:
        """The models whose logits Disagreement Augmentation moves the batch away from agreeing with: the
        teachers; an online method without teachers (DML) gives the student's peers."""
        return list(self.teachers)

    @property
    def teacher(self) -> nn.Module:
        return self.teachers[0]

    @torch.no_grad()
    def teacher_logits(self, x: Tensor) -> Tensor:
        """The (single) teacher's logits; no graph is kept. Rows whose logits the step already knows
        (`known_teacher_logits`, adaptive DA) are not recomputed; the others are replayed from the
        teacher-output cache when it is on."""
        known = self._known_teacher_logits
        logits = known.complete(self.teacher, x) if known is not None else None
        return self.teacher_outputs(x, 0, ("logits",))["logits"] if logits is None else logits

    @contextlib.contextmanager
    def known_teacher_logits(self, known: KnownTeacherLogits | None) -> Iterator[None]:
        """For the duration, `teacher_logits(x)` reuses `known` when x is its batch (the trainer's step wraps
        `forward_train` in it); None changes nothing."""
        self._known_teacher_logits = known
        try:
            yield
        finally:
            self._known_teacher_logits = None

    # ----------------------------------------------------------------------------- teacher-output cache
    def teacher_cache_fields(self) -> list[tuple[str, ...]] | None:
        """Per teacher, the outputs `forward_train` reads on the loader's batch through `teacher_outputs`
        (`feature_fields`): what a teacher-output cache must hold for this method. None (the default): the
        method reads its teachers otherwise, and a config that turns the cache on is refused."""
        return None

    @torch.no_grad()
    def teacher_outputs(self, x: Tensor, index: int = 0, fields: Sequence[str] = ("logits",)) -> dict[str, Tensor]:
        """Teacher `index`'s outputs on `x` by field, no graph: from the cache when `x` is the batch it replays,
        else live (and recorded when the cache asks for them)."""
        replay = self.teacher_replay
        if replay is not None and replay.serves(x):
            cached = replay.lookup(index, fields)
            if cached is not None:
                return cached
        serves = replay is not None and replay.serves(x)
        wanted = replay.wanted.get(index, ()) if serves else ()
        out = compute_teacher_outputs(self.teachers[index], x, tuple(dict.fromkeys([*fields, *wanted])))
        if wanted:
            replay.store(index, out)
        if serves and replay.lossy is not None:  # the run trains on what a replay would give: same numbers either way
            return {f: replay.lossy(f, out[f]) for f in fields}
        return {f: out[f] for f in fields}

    def teacher_features(self, x: Tensor, fields: Sequence[str], index: int = 0) -> Features:
        """Teacher `index`'s outputs named by `fields` (`feature_fields`) as `Features`, no graph: the stages
        asked for in place (the others None), from the cache when `x` is the batch it replays."""
        out = self.teacher_outputs(x, index, fields)
        count = len(self.teachers[index].stage_channels)
        return Features(stages=[out.get(f"stage{i}") for i in range(count)], embedding=out.get("embedding"),
                        logits=out.get("logits"), preact_stages=[out.get(f"preact{i}") for i in range(count)])

    @contextlib.contextmanager
    def replaying(self, replay: TeacherReplay | None) -> Iterator[None]:
        """Serve (and record) the teachers' outputs on `replay.batch` for the duration of one step."""
        self.teacher_replay = replay
        try:
            yield
        finally:
            self.teacher_replay = None

    def fill_teacher_replay(self, replay: TeacherReplay) -> None:
        """Run the teachers whose wanted outputs the step did not record (it trained on another batch, e.g. a
        DA-perturbed one) on the clean batch, so the cache entry of the epoch is complete."""
        for index in replay.missing():
            replay.store(index, compute_teacher_outputs(self.teachers[index], replay.batch, replay.wanted[index]))


def list_distillers() -> list[str]:
    """The registered method names."""
    return METHODS.names()


def method_options(name: str, **values: Any) -> Options:
    """The options of method `name` with `values` replacing defaults, checked (a ValueError names the key)."""
    options = dataclasses.replace(METHODS.default_options(name), **values)
    options.check("method")
    return options


def as_model_list(models: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    """One module or several as a list: an `nn.Sequential` (or any module) is one model, an `nn.ModuleList` a
    list of models."""
    if isinstance(models, nn.Module) and not isinstance(models, nn.ModuleList):
        return [models]
    return list(models)


def create_distiller(method: Options | str, student: nn.Module, teachers: nn.Module | Sequence[nn.Module] = (),
                     *, input_shape: Sequence[int] | None = None, **values: Any) -> Distiller:
    """Build a registered method around an existing student and teachers (any `nn.Module`s).

    `method` is the method's options (a config's `method` section) or its name, whose defaults `values`
    replace: `create_distiller("kd", student, teacher, temperature=2)`. A method registered with
    `features=True` reads `forward_features()`: a model without it is wrapped in
    `socratic.models.external.HookedModel` with its stages found automatically (`as_feature_model`;
    `input_shape` (C, H, W) is the size of its probe forward, else taken from the other models or inferred).
    """
    options = method_options(method, **values) if isinstance(method, str) else method
    entry = METHODS.get(options.name)
    teachers = as_model_list(teachers)
    low, high = entry.meta.get("teachers", (0, 0))
    if len(teachers) < low or (high is not None and len(teachers) > high):
        need = f"{low}" if high == low else (f">= {low}" if high is None else f"{low} to {high}")
        raise ValueError(f"method '{entry.name}' takes {need} teacher(s), got {len(teachers)}")
    if entry.meta.get("features"):
        from socratic.models.external import as_feature_models

        student, *teachers = as_feature_models([student, *teachers], input_shape)
    return entry.factory.from_options(options, student, teachers)
