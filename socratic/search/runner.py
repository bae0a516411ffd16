"""`socratic search`: an Optuna study over experiment-config keys, each trial a normal run folder.

One call is one worker: start the same command in several processes or on several machines with a shared
`--storage` and they work on one study. `--n-trials` is the number of finished (complete or pruned) trials
the *study* should reach, so a killed search started again continues to the same total, and a worker whose
work is done waits while other workers' trials are running, to take over any whose worker dies (stale
trials are failed after the heartbeat's grace period and re-queued with the same parameters; the new
attempt resumes the killed attempt's `last.pt` when there is one).

Objective: the run's best validation top-1 (`summary.json`'s best_top1), maximised. Each evaluated epoch
reports its val_top1 to the trial, so the pruner (Hyperband by default) can stop weak trials early; a
pruned trial keeps its run folder (metrics of the epochs done, last.pt) marked PRUNED in `trial.json`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import dataclasses
import math
import os
import shutil
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from socratic.config import ConfigError
from socratic.config.loader import apply_overrides, config_from_dict, read_yaml
from socratic.engine.logger import read_metrics
from socratic.search.space import SearchSpace, SearchSpaceError, load_search_space
from socratic.search.storage import JournalHeartbeat, StorageHandle, _optuna, fail_stale_trials, open_storage

SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler", "qmc": "QMCSampler",
            "gp": "GPSampler"}
PRUNERS = {"hyperband": "HyperbandPruner", "successive_halving": "SuccessiveHalvingPruner",
           "median": "MedianPruner", "none": "NopPruner"}
RESOURCE_KEYS = ("min_resource", "max_resource", "n_warmup_steps")
FINISHED = ("COMPLETE", "PRUNED")


class SurplusTrial(Exception):
    """A trial created while the study already had enough trials (two workers asked at the same moment)."""


class InvalidTrialConfig(Exception):
    """The sampled values are each valid but not together (the config validation refuses the combination)."""


def _quiet_optuna_warnings() -> None:
    optuna = _optuna()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


def _resource(value: Any, epochs: int, key: str) -> Any:
    """A pruner resource in epochs: an int, 'auto', or a fraction in (0, 1) of optim.epochs (rounded up: at least
    that share of the epochs)."""
    if isinstance(value, float) and 0 < value < 1:
        return max(1, math.ceil(value * epochs - 1e-9))
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ConfigError(f"pruner.{key}: expected an epoch count, 'auto' or a fraction in (0, 1), got {value!r}")


def build_sampler(options: dict[str, Any], seed: int | None = None) -> Any:
    optuna = _optuna()
    options = dict(options)
    name = options.pop("name", "tpe")
    if name not in SAMPLERS:
        raise ConfigError(f"sampler: '{name}' is not one of {', '.join(SAMPLERS)}")
    if seed is not None:
        options.setdefault("seed", seed)
    if name == "tpe":
        options.setdefault("constant_liar", True)  # parallel workers: do not all sample next to a running trial
    try:
        return getattr(optuna.samplers, SAMPLERS[name])(**options)
    except (TypeError, ValueError, ImportError) as err:
        raise ConfigError(f"sampler {name} with {options}: {err}") from err


def build_pruner(options: dict[str, Any], epochs: int) -> Any:
    optuna = _optuna()
    options = dict(options)
    name = options.pop("name", "hyperband")
    if name not in PRUNERS:
        raise ConfigError(f"pruner: '{name}' is not one of {', '.join(PRUNERS)}")
    for key in RESOURCE_KEYS:
        if key in options:
            options[key] = _resource(options[key], epochs, key)
    if name == "hyperband":
        options.setdefault("min_resource", 1)
        options.setdefault("max_resource", epochs)
        options.setdefault("reduction_factor", 3)
    try:
        return getattr(optuna.pruners, PRUNERS[name])(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"pruner {name} with {options}: {err}") from err


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write (several workers may write the same file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _default_run_dir(cfg: Any) -> Path:
    from socratic.engine.run import run_dir_for

    return run_dir_for(cfg.output_dir, cfg.name, cfg.seed)


def _optim_epochs(cfg: Any) -> int:
    return int(cfg.optim.epochs)


@dataclass(frozen=True)
class RunKind:
    """What a search needs of a kind of run: plain data -> its validated config, the run itself
    (`run(cfg, resume=..., epoch_callbacks=[...]) -> summary`), the run folder it writes (default
    <output_dir>/<name>/seed<seed>) and its number of epochs (default optim.epochs: the pruner's resource)."""

    build: Callable[[dict[str, Any]], Any]
    run: Callable[..., dict[str, Any]]
    run_dir: Callable[[Any], Path] = _default_run_dir
    epochs: Callable[[Any], int] = _optim_epochs


def _train_kind() -> RunKind:
    from socratic.experiment import run_experiment

    return RunKind(config_from_dict, run_experiment)


def _rl_distill_kind() -> RunKind:
    from socratic.rl.config import DistillConfig, rl_config_from_dict
    from socratic.rl.distill import run_distillation

    return RunKind(lambda values: rl_config_from_dict(DistillConfig, values), run_distillation)


def _rl_dpd_kind() -> RunKind:
    from socratic.rl.config import DPDConfig, rl_config_from_dict
    from socratic.rl.dpd import run_dpd

    return RunKind(lambda values: rl_config_from_dict(DPDConfig, values), run_dpd, epochs=lambda cfg: cfg.rounds)


def _dataset_distill_kind() -> RunKind:
    from socratic.distill_data.search import dataset_distill_kind

    return RunKind(**dataset_distill_kind())


# `socratic search --kind`: classification training/distillation, RL policy distillation or dual policy
# distillation (extra [rl]; the objective of an RL dpd trial is its per-round `eval_score_mean`, both learners),
# or MKDT's distill stage (its learning rates; the earlier stages are read from source_dir)
RUN_KINDS: dict[str, Callable[[], RunKind]] = {"train": _train_kind, "rl-distill": _rl_distill_kind,
                                               "rl-dpd": _rl_dpd_kind, "dataset-distill": _dataset_distill_kind}


def run_kind(name: str) -> RunKind:
    if name not in RUN_KINDS:
        raise ConfigError(f"--kind: {name!r} is not one of {', '.join(RUN_KINDS)}")
    return RUN_KINDS[name]()


def _study_signature(base: dict[str, Any], space: SearchSpace, kind: RunKind) -> dict[str, Any]:
    """What must be the same for two workers to share a study (runtime and output_dir may differ per machine)."""
    config = {k: v for k, v in dataclasses.asdict(kind.build(copy.deepcopy(base))).items()
              if k not in ("runtime", "output_dir")}
    return json.loads(json.dumps({"config": config, "space": space.as_dict()}, default=str))


def best_objective(history: list[dict[str, Any]], objective: str, direction: str = "maximize") -> float:
    """A trial's value: the best per-epoch value of `objective` (a metrics.jsonl key) in `direction`."""
    values = [float(m[objective]) for m in history if isinstance(m.get(objective), (int, float))]
    if not values:
        keys = sorted({k for m in history for k, v in m.items() if isinstance(v, (int, float))})
        raise ConfigError(f"search.objective: '{objective}' is not a numeric key of this run's metrics.jsonl; "
                          f"its keys: {', '.join(keys)}")
    return max(values) if direction == "maximize" else min(values)


class _Objective:
    """One trial: build its config, run it as a normal run folder, report each epoch, mark the folder."""

    def __init__(self, base: dict[str, Any], space: SearchSpace, study_dir: Path, handle: StorageHandle,
                 n_trials: int, console: Console, kind: RunKind) -> None:
        self.base, self.space, self.study_dir, self.handle = base, space, study_dir, handle
        self.n_trials, self.console, self.kind = n_trials, console, kind

    def trial_config(self, number: int, values: dict[str, Any]) -> Any:
        config = apply_overrides(copy.deepcopy(self.base), self.space.trial_overrides(values))
        config["output_dir"] = str(self.study_dir)
        config["name"] = f"trial{number}"
        return self.kind.build(config)

    def _check_surplus(self, trial: Any) -> None:
        optuna = _optuna()
        alive = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
        before = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number and t.state in alive]
        if len(before) >= self.n_trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number} is not needed: the study already has {len(before)} trials "
                               f"finished or running (--n-trials {self.n_trials})")

    def _adopt_previous_attempt(self, trial: Any, cfg: Any, run_dir: Path) -> bool:
        """A re-queued stale trial continues the killed attempt's run folder when it has a checkpoint."""
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        history = frozen.system_attrs.get("retry_history") or []  # set by Optuna's retry callback
        if not history:
            return False
        previous = int(history[-1])
        trial.set_user_attr("retry_of", previous)
        prev_dir = self.kind.run_dir(dataclasses.replace(cfg, name=f"trial{previous}"))
        if prev_dir.exists():
            marker = json.loads((prev_dir / "trial.json").read_text()) if (prev_dir / "trial.json").exists() else {}
            _write_json(prev_dir / "trial.json", {**marker, "number": previous, "state": "FAIL",
                                                   "note": f"its worker stopped; retried as trial {trial.number}"})
        if not (prev_dir / "checkpoints" / "last.pt").exists():
            return False
        shutil.copytree(prev_dir, run_dir)
        # the same config except the name
        (run_dir / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        objective = cfg.search.objective
        for metrics in read_metrics(run_dir / "metrics.jsonl"):
            if objective in metrics:
                trial.report(float(metrics[objective]), int(metrics["epoch"]))
        trial.set_user_attr("resumed_from", str(prev_dir))
        self.console.print(f"trial {trial.number}: resuming trial {previous}'s run from {prev_dir}")
        return True

    def __call__(self, trial: Any) -> float:
        with contextlib.ExitStack() as stack:
            if self.handle.own_heartbeat:  # journal storage: socratic's heartbeat (RDB: Optuna's own thread)
                stack.enter_context(JournalHeartbeat(trial.study._storage, trial._trial_id,  # noqa: SLF001
                                                     self.handle.heartbeat))
            return self._run_trial(trial)

    def _run_trial(self, trial: Any) -> float:
        from socratic.engine.run import NonFiniteLossError

        optuna = _optuna()
        self._check_surplus(trial)
        values = {param.key: param.suggest(trial) for param in self.space.params}
        try:
            cfg = self.trial_config(trial.number, values)
        except ConfigError as err:
            trial.set_user_attr("error", f"invalid combination: {err}")
            raise InvalidTrialConfig(str(err)) from err
        run_dir = self.kind.run_dir(cfg)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        marker: dict[str, Any] = {"study": trial.study.study_name, "number": trial.number, "params": values,
                                  "state": "RUNNING"}
        resume = self._adopt_previous_attempt(trial, cfg, run_dir)
        if not resume and run_dir.exists():
            raise ConfigError(f"trial {trial.number}: the run folder {run_dir} exists but the study does not know it "
                              f"(a study of the same name in another storage?); use another --study-name")

        objective = cfg.search.objective

        def report(epoch: int, metrics: dict[str, Any]) -> None:
            _write_json(run_dir / "trial.json", {**marker, "epoch": epoch})  # RUNNING, for a worker killed later
            if objective not in metrics:
                return
            trial.report(float(metrics[objective]), epoch)
            if epoch < self.kind.epochs(cfg) and trial.should_prune():  # a trial that ran all its epochs is complete
                marker["pruned_at_epoch"] = epoch
                raise optuna.TrialPruned(f"trial {trial.number} pruned after epoch {epoch} "
                                         f"({objective} {metrics[objective]:.4g})")

        state = "FAIL"
        try:
            self.kind.run(cfg, resume=resume, epoch_callbacks=[report])
            value = best_objective(read_metrics(run_dir / "metrics.jsonl"), objective, cfg.search.direction)
            state = "COMPLETE"
            marker["value"] = value
            return value
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        except NonFiniteLossError as err:
            marker["error"] = str(err)
            trial.set_user_attr("error", str(err))
            raise
        except KeyboardInterrupt:
            # Ctrl-C: Optuna marks the trial FAIL; queue it again (as a stale trial would be) so the next
            # `socratic search` continues this run folder's last.pt instead of losing the epochs done.
            if self.handle.retry is not None:
                frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
                self.handle.retry(trial.study, frozen)
                marker["note"] = "interrupted; queued again"
            raise
        finally:
            marker["state"] = state
            if run_dir.exists():
                _write_json(run_dir / "trial.json", marker)


def _counts(study: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def _is_object(choice: Any) -> bool:
    return choice is not None and not isinstance(choice, str)


def _options(name: str | None, from_file: dict[str, Any], default: str) -> dict[str, Any]:
    """The space file's sampler/pruner options, unless the command line names another one."""
    if name is not None and name != from_file.get("name"):
        return {"name": name}
    return from_file or {"name": default}


def default_study_name(config_name: str, space_path: str | Path) -> str:
    return f"{config_name}_{Path(space_path).stem}"


def run_search(config: str | Path, space: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
               n_trials: int = 20, timeout: float | None = None, study_name: str | None = None,
               storage: str | None = None, sampler: str | Any | None = None, pruner: str | Any | None = None,
               seed: int | None = None, heartbeat: int | None = 60, grace_period: int | None = None,
               max_retry: int | None = 3, report: bool = True, poll_interval: float | None = None,
               console: Console | None = None, kind: str = "train") -> dict[str, Any]:
    """Run one search worker until the study has `n_trials` finished trials (or `timeout` seconds passed).

    `sampler`/`pruner`: a name (overriding the space file's) or an Optuna sampler/pruner object. `kind` is the
    kind of run a trial is (`RUN_KINDS`: train, rl-distill, rl-dpd, dataset-distill); the objective is the
    config's `search.objective`.
    Returns a summary: study name, storage, trial counts, the best trial and the study folder.
    """
    from socratic.engine.distributed import env_info

    optuna = _optuna()
    _quiet_optuna_warnings()
    console = console or Console(stderr=True)
    if env_info().enabled:
        raise ConfigError("socratic search runs single-process trials: start several workers (processes) sharing "
                          "--storage instead of running it under torchrun")
    if n_trials < 1:
        raise ConfigError(f"--n-trials must be >= 1, got {n_trials}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {timeout}")
    run = run_kind(kind)
    search_space = load_search_space(space)
    base = apply_overrides(read_yaml(config), list(overrides))
    base_cfg = run.build(copy.deepcopy(base))  # the base config itself is valid
    search_space.check(base, run.build)
    name = study_name or default_study_name(base_cfg.name, space)
    if not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"--study-name {name!r}: use a plain folder name")
    study_dir = Path(base_cfg.output_dir) / name
    handle = open_storage(storage, study_dir, heartbeat=heartbeat, grace_period=grace_period, max_retry=max_retry)
    study_dir.mkdir(parents=True, exist_ok=True)

    sampler_obj = (sampler if _is_object(sampler)
                   else build_sampler(_options(sampler, search_space.sampler, "tpe"), seed))
    pruner_obj = pruner if _is_object(pruner) else build_pruner(_options(pruner, search_space.pruner, "hyperband"),
                                                               run.epochs(base_cfg))

    study = optuna.create_study(study_name=name, storage=handle.storage, sampler=sampler_obj, pruner=pruner_obj,
                                direction=base_cfg.search.direction, load_if_exists=True)
    existing = len(study.get_trials(deepcopy=False))
    if existing and seed is not None and not _is_object(sampler):
        # a resumed worker with the same --sampler-seed would replay the first points it sampled before the kill
        study.sampler = build_sampler(_options(sampler, search_space.sampler, "tpe"), seed + existing)
    signature = _study_signature(base, search_space, run)
    stored = study.user_attrs.get("socratic")
    if stored is None:
        study.set_user_attr("socratic", signature)
        study.set_user_attr("objective", base_cfg.search.objective)
    elif stored != signature:
        raise ConfigError(f"study '{name}' in {handle.description} was started with a different config or search "
                          f"space; give this search another --study-name (or the same config, overrides and space)")
    _write_json(study_dir / "search.json", {
        "study_name": name, "storage": handle.description, "storage_kind": handle.kind, "config": str(config),
        "space": str(space), "overrides": list(overrides), "n_trials": n_trials})

    objective = _Objective(base, search_space, study_dir, handle, n_trials, console, run)
    poll = poll_interval if poll_interval is not None else max(0.5, min(10.0, (handle.heartbeat or 10) / 2))
    deadline = time.monotonic() + timeout if timeout else None
    from socratic.engine.run import NonFiniteLossError

    states = optuna.trial.TrialState
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            failed = fail_stale_trials(study, handle)
        if failed:
            console.print(f"stale trial(s) {failed}: their worker stopped; failed and re-queued")
        counts = _counts(study)
        done = sum(counts.get(s, 0) for s in FINISHED)
        running, waiting = counts.get("RUNNING", 0), counts.get("WAITING", 0)
        if done >= n_trials or (deadline is not None and time.monotonic() >= deadline):
            break
        failures = sum(1 for t in study.get_trials(deepcopy=False, states=(states.FAIL,))
                       if "error" in t.user_attrs)
        if failures >= max(10, n_trials):
            console.print(f"stopping: {failures} trials failed (non-finite loss or an invalid combination of "
                          f"values); narrow the search space")
            break
        if waiting == 0 and done + running >= n_trials:
            if handle.heartbeat is None:
                break  # without a heartbeat a dead worker's trial cannot be told from a live one: do not wait
            time.sleep(poll)  # the last trials run elsewhere: wait to take over any whose worker dies
            continue
        study.optimize(objective, n_trials=1, catch=(NonFiniteLossError, SurplusTrial, InvalidTrialConfig),
                       gc_after_trial=True, show_progress_bar=False)

    result = summarize(study, study_dir, handle.description)
    if report:
        from socratic.search.report import write_report

        result["report"] = {k: str(v) for k, v in write_report(study, study_dir).items()}
    return result


def summarize(study: Any, study_dir: Path, storage: str) -> dict[str, Any]:
    counts = _counts(study)
    result: dict[str, Any] = {"study": study.study_name, "storage": storage, "study_dir": str(study_dir),
                              "trials": counts}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if complete:
        pick = min if study.direction.name == "MINIMIZE" else max
        best = pick(complete, key=lambda t: t.value)
        result.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                      best_run_dir=best.user_attrs.get("run_dir"))
    return result


def load_study(study_dir: str | Path, storage: str | None = None, study_name: str | None = None) -> tuple[Any, str]:
    """The study of a `socratic search` folder (its `search.json` names the storage), or of `--storage`."""
    optuna = _optuna()
    _quiet_optuna_warnings()
    study_dir = Path(study_dir)
    info: dict[str, Any] = {}
    if (study_dir / "search.json").exists():
        info = json.loads((study_dir / "search.json").read_text())
    name = study_name or info.get("study_name") or study_dir.name
    if storage is None:
        stored = info.get("storage")
        if info.get("storage_kind") == "journal":
            storage = f"journal:{stored}"
        elif stored and "***" not in stored:
            storage = stored
        elif (study_dir / "study.db").exists():
            storage = None  # the default file in the folder
        elif stored:
            raise ConfigError(f"{study_dir}: the study is in {stored}; pass --storage with the full URL (password)")
        else:
            raise ConfigError(f"{study_dir}: no search.json or study.db here; pass --storage and --study-name")
    handle = open_storage(storage, study_dir, heartbeat=None)
    try:
        return optuna.load_study(study_name=name, storage=handle.storage), handle.description
    except KeyError as err:
        raise ConfigError(f"no study named '{name}' in {handle.description}") from err


def search_report(study_dirs: list[str | Path], storage: str | None = None, study_name: str | None = None,
                  out: str | Path | None = None) -> list[dict[str, Any]]:
    """Write the table and plots of each study folder (into the folder, or into `out`/<study>)."""
    from socratic.search.report import write_report

    results = []
    for study_dir in map(Path, study_dirs):
        if not study_dir.exists():
            raise FileNotFoundError(f"no such study folder: {study_dir}")
        study, description = load_study(study_dir, storage, study_name)
        target = Path(out) / study.study_name if out is not None else study_dir
        result = summarize(study, study_dir, description)
        result["report"] = {k: str(v) for k, v in write_report(study, target).items()}
        results.append(result)
    return results


__all__ = ["SearchSpaceError", "build_pruner", "build_sampler", "load_study", "run_search", "search_report",
           "summarize"]
