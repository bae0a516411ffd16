"""The `socratic` command: thin subcommands over the library. Bad input exits 2 with a clear message."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from socratic import __version__
from socratic.config import ConfigError, DAConfig, load_config
from socratic.engine.run_options import add_run_options, print_config

console = Console()
err_console = Console(stderr=True)

EXIT_BAD_INPUT = 2


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML experiment config (see configs/ and docs/configs.md)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides applied after the file, e.g. optim.lr=0.01 seed=3")
    add_run_options(parser)


def cmd_run(args: argparse.Namespace) -> int:
    from socratic.experiment import run_experiment

    config = load_config(args.config, args.overrides)
    if args.print_config:
        print_config(config)
        return 0
    if args.command == "train" and config.method.name != "ce":
        raise ConfigError(f"'socratic train' trains without a teacher (method.name: ce); "
                          f"this config has method.name '{config.method.name}': use 'socratic distill'")
    if args.command == "distill" and config.method.name == "ce":
        raise ConfigError("'socratic distill' needs a distillation method (method.name: kd, fitnet, ...) and "
                          "a teacher; use 'socratic train' for method.name: ce")
    summary = run_experiment(config, resume=args.resume, overwrite=args.overwrite,
                             accept_config_changes=args.accept_config_changes)
    from socratic.engine.distributed import env_info

    if env_info().is_main:  # under torchrun every rank returns the summary; rank 0 prints it
        console.print_json(json.dumps(summary))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from socratic.search import run_search

    result = run_search(args.config, args.space, args.overrides, n_trials=args.n_trials, timeout=args.timeout,
                        study_name=args.study_name, storage=args.storage, sampler=args.sampler, pruner=args.pruner,
                        seed=args.sampler_seed, heartbeat=args.heartbeat, grace_period=args.grace_period,
                        max_retry=args.max_retry, report=not args.no_report, kind=args.kind)
    console.print_json(json.dumps(result, default=str))
    return 0


def cmd_search_report(args: argparse.Namespace) -> int:
    from socratic.search import search_report

    for result in search_report(args.studies, storage=args.storage, study_name=args.study_name, out=args.out):
        console.print(Path(result["report"]["markdown"]).read_text(), markup=False, highlight=False, soft_wrap=True)
        err_console.print(f"wrote {', '.join(v for k, v in result['report'].items() if not k.endswith('_skipped'))}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from socratic.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, dataset=args.data, root=args.root, split=args.split,
                                 batch_size=args.batch_size, device=args.device, precision=args.precision)
    console.print_json(json.dumps(result))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from socratic.reports import ReportError, report, to_csv, to_markdown

    if args.html:
        from socratic.html_report import write_html_report

        err_console.print(f"wrote {write_html_report(args.runs, args.html, baseline=args.baseline)}")
        try:  # the page has the RL runs too; the table below is of the classification runs
            rows = report(args.runs, baseline=args.baseline)
        except (FileNotFoundError, ReportError):
            return 0
    else:
        rows = report(args.runs, baseline=args.baseline)
    console.print(to_markdown(rows, args.baseline), markup=False, highlight=False, soft_wrap=True)
    if args.csv:
        Path(args.csv).write_text(to_csv(rows))
        err_console.print(f"wrote {args.csv}")
    return 0


def _input_size(text: str) -> tuple[int, int, int]:
    try:
        size = tuple(int(v) for v in text.split(","))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) <= 0:
        raise argparse.ArgumentTypeError(f"--input-size must be C,H,W like 3,32,32, got '{text}'")
    return size  # type: ignore[return-value]


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"--da-select must be a number in (0, 1], got '{text}'")
    return value


def cmd_models(args: argparse.Namespace) -> int:
    from socratic.models import describe_models, list_models

    names = args.names or list_models()
    table = Table("model", "parameters", f"FLOPs at {'x'.join(map(str, args.input_size))}")
    for row in describe_models(names, num_classes=args.num_classes, input_size=args.input_size):
        table.add_row(row["name"], f"{row['params']:,}", f"{row['flops'] / 1e6:,.1f} M")
    console.print(table)
    return 0


KINDS = {"methods": "METHODS", "augmentations": "AUGMENTATIONS", "datasets": "DATASETS",
         "env-suites": "ENV_SUITES", "weightings": "WEIGHTINGS"}


def cmd_list(args: argparse.Namespace) -> int:
    import dataclasses

    from socratic import registry

    components = getattr(registry, KINDS[args.kind])
    table = Table(args.kind[:-1], "options (defaults)", "metadata")
    for entry in components.entries():
        options = components.default_options(entry.name)
        keys = ", ".join(f"{f.name}={getattr(options, f.name)!r}" for f in dataclasses.fields(options)
                         if f.name != "name")
        meta = ", ".join(f"{k}={v!r}" for k, v in entry.meta.items() if isinstance(v, (str, int, float, tuple, bool)))
        table.add_row(entry.name, keys or "-", meta or "-")
    console.print(table)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from socratic.bench import bench_pair

    result = bench_pair(args.teacher, args.student, batch_size=args.batch_size, precision=args.precision,
                        channels_last=args.channels_last, steps=args.steps, warmup=args.warmup,
                        num_classes=args.num_classes, input_size=args.input_size, device=args.device,
                        select=args.da_select)
    table = Table("measure", "value")
    for key, value in result.items():
        digits = 2 if "_over_" in key or "_of_" in key or key == "da_select" else 3 if "gflop_per_img" in key else 1
        table.add_row(key, f"{value:,.{digits}f}" if isinstance(value, float) else str(value))
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from socratic.augment.robustness import run_robustness

    result = run_robustness(args.teacher, args.students, args.out, steps=args.steps, lr=args.lr, dataset=args.data,
                            root=args.root, split=args.split, limit=args.limit, batch_size=args.batch_size,
                            device=args.device, seed=args.seed)
    table = Table("steps", "model", "role", "perturbed against", "top-1 (%)")
    for row in result["rows"]:
        table.add_row(str(row["steps"]), row["model"], row["role"], row["perturbed_against"], f"{row['top1']:.2f}")
    console.print(table)
    err_console.print(f"wrote {result['csv']} and {result['png']}")
    return 0


def cmd_visualize_da(args: argparse.Namespace) -> int:
    from socratic.augment.visualize import visualize_da

    path = visualize_da(args.teacher, args.student, args.out, amplify=args.amplify, dataset=args.data, root=args.root,
                        split=args.split, count=args.count, steps=args.steps, lr=args.lr, seed=args.seed,
                        device=args.device)
    err_console.print(f"wrote {path}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from socratic.data import load_dataset
    from socratic.registry import DATASETS

    install = DATASETS.get(args.name).meta.get("install")
    if args.install and install is None:
        installable = [e.name for e in DATASETS.entries() if e.meta.get("install") is not None]
        raise ConfigError(f"--install is only available for {', '.join(installable)}, not {args.name}")
    root = install() if args.install else args.root
    for split in ("train", "test"):
        dataset = load_dataset(args.name, root=root, split=split, download=args.download)
        console.print(f"{args.name} {split}: {len(dataset)} images of {tuple(dataset.image_shape)}, "
                      f"{dataset.num_classes} classes")
    return 0


def cmd_plot_weights(args: argparse.Namespace) -> int:
    from socratic.multiteacher.plot import plot_teacher_weights

    try:
        console.print(str(plot_teacher_weights(args.run_dir, args.out)))
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    from socratic.shipped_configs import copy_config, list_configs

    if args.action == "list":
        names = list_configs(args.name or "")
        if not names:
            raise ConfigError(f"no shipped config starts with '{args.name}' (`socratic configs list` shows all)")
        console.print("\n".join(names), markup=False, highlight=False, soft_wrap=True)
        return 0
    if not args.name:
        raise ConfigError("socratic configs copy NAME: name a config (`socratic configs list` shows them)")
    target = copy_config(args.name, args.to, overwrite=args.force)
    err_console.print(f"wrote {target}", markup=False, highlight=False, soft_wrap=True)
    import yaml

    checkpoints = [t.get("checkpoint") for t in (yaml.safe_load(target.read_text()) or {}).get("teachers") or []]
    missing = [c for c in checkpoints if c and not Path(c).exists()]
    if missing:
        err_console.print(f"note: its teacher checkpoint(s) {', '.join(missing)} are not here (paths are relative to "
                          "where you run it; the committed teacher zoo is in the repository's teachers/ folder)",
                          markup=False, highlight=False, soft_wrap=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from socratic.demo import run_demo

    run_demo(output_dir=args.output_dir, epochs=args.epochs, train_subset=args.train_subset)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """`socratic cache list|clear`: the teacher-output cache (docs/performance.md)."""
    from socratic.engine.teacher_cache import cache_root, clear_cache, list_cache

    root = cache_root(args.dir)
    if args.action == "clear":
        freed = clear_cache(root, keys=args.key or (), partial_only=args.partial)
        console.print(f"freed {freed / 2**20:.1f} MiB under {root}")
        return 0
    rows = list_cache(root)
    if not rows:
        console.print(f"no teacher outputs cached under {root}")
        return 0
    console.print(f"teacher outputs under {root}:", markup=False, highlight=False)
    for row in rows:
        epochs = row["epochs"]
        span = f"{epochs[0]}..{epochs[-1]} ({len(epochs)})" if epochs else "none"
        partial = f", {row['partial']} partial" if row["partial"] else ""
        console.print(f"{row['key']}  {row['teacher']} ({row['checkpoint']})  seed {row['seed']}  "
                      f"{row['precision']}  epochs {span}  {', '.join(row['fields']) or '-'}  "
                      f"{row['bytes'] / 2**20:.1f} MiB{partial}", markup=False, highlight=False, soft_wrap=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="socratic", description="Teacher-student learning for PyTorch.")
    parser.add_argument("--version", action="version", version=f"socratic {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a teacher or a from-scratch baseline (method.name: ce)",
                           description="Train a network on labels alone; the run folder is "
                                       "<output_dir>/<name>/seed<seed>.")
    _add_run_arguments(train)
    train.set_defaults(func=cmd_run)
    distill = sub.add_parser("distill", help="distil a student from a trained teacher (kd, fitnet, ...)",
                             description="Distil a student from the teacher checkpoint(s) named in the config.")
    _add_run_arguments(distill)
    distill.set_defaults(func=cmd_run)

    evaluate = sub.add_parser("evaluate", help="accuracy of a checkpoint on a dataset split")
    evaluate.add_argument("checkpoint", help="a checkpoint written by socratic (best.pt or last.pt)")
    evaluate.add_argument("--data", default=None, help="dataset name (default: the one the checkpoint was trained on)")
    evaluate.add_argument("--root", default=None, help="dataset folder (default: the dataset's default places)")
    evaluate.add_argument("--split", default="test", choices=["train", "test"], help="which split (default test)")
    evaluate.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    evaluate.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                          help="autocast precision (default auto: bf16 where the hardware has it natively, else fp32)")
    evaluate.set_defaults(func=cmd_evaluate)

    rep = sub.add_parser("report", help="table of runs grouped by config: mean ± std over seeds (--html: a page)")
    rep.add_argument("runs", nargs="+", help="run folders, or folders to search for them")
    rep.add_argument("--csv", default=None, help="also write the table as CSV to this file")
    rep.add_argument("--baseline", default=None,
                     help="name of a run group: add per-seed top-1, the difference of means, Welch's t, its degrees "
                          "of freedom and the p-value against it")
    rep.add_argument("--html", default=None, metavar="OUT",
                     help="also write OUT/index.html: one self-contained page with the tables, learning curves with "
                          "seed bands, DA statistics, teacher weights and RL score curves (docs/report.md)")
    rep.set_defaults(func=cmd_report)

    models = sub.add_parser("models", help="list zoo models with parameters and FLOPs")
    models.add_argument("names", nargs="*", help="models to describe (default: all registered)")
    models.add_argument("--num-classes", type=int, default=100, help="classifier size (default 100)")
    models.add_argument("--input-size", type=_input_size, default=(3, 32, 32), help="C,H,W (default 3,32,32)")
    models.set_defaults(func=cmd_models)

    listing = sub.add_parser("list", help="the registered components of one kind, with their options and defaults",
                             description="Every registered method (or augmentation, dataset, environment suite, "
                                         "teacher weighting) with the keys of its config section and their defaults.")
    listing.add_argument("kind", choices=sorted(KINDS), help="which kind of component")
    listing.set_defaults(func=cmd_list)

    bench = sub.add_parser("bench", help="img/s of teacher forward, student step, KD step and KD+DA step, each step's "
                                         "FLOPs and the fraction of the measured matmul rate it reaches; peak memory")
    bench.add_argument("--teacher", default="resnet32x4", help="teacher model name (default resnet32x4)")
    bench.add_argument("--student", default="resnet8x4", help="student model name (default resnet8x4)")
    bench.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    bench.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                       help="autocast precision (default auto: bf16 where the hardware has it natively, else fp32)")
    bench.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    bench.add_argument("--steps", type=int, default=10, help="timed steps per measure (default 10)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default 2)")
    bench.add_argument("--num-classes", type=int, default=100, help="classes (default 100)")
    bench.add_argument("--input-size", type=_input_size, default=(3, 32, 32), help="C,H,W (default 3,32,32)")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    bench.add_argument("--da-select", type=_fraction, default=1.0,
                       help="da.select of the DA step: the fraction of the batch moved (default 1: the paper's DA)")
    bench.add_argument("--json", default=None, help="also write the results to this JSON file")
    bench.set_defaults(func=cmd_bench)

    PAPER_LR = DAConfig().lr  # noqa: N806 - the paper's alpha; importing socratic.augment would load torch

    robust = sub.add_parser(
        "robustness", help="accuracy of a teacher and students on DA-perturbed validation images vs DA steps",
        description="Perturb validation images with Disagreement Augmentation between each student and the teacher "
                    "(fresh Adam on the images, -MSE of L1-normalised logits; Wong et al., Figure 4) and measure "
                    "both models' top-1 after 0..N steps. Writes <out>/robustness.csv and <out>/robustness.png.")
    robust.add_argument("--teacher", required=True, help="teacher checkpoint written by socratic train/distill")
    robust.add_argument("--students", required=True, nargs="+", help="one or more student checkpoints")
    robust.add_argument("--steps", type=int, default=10, help="largest number of DA steps (default 10)")
    robust.add_argument("--lr", type=float, default=PAPER_LR, help=f"DA step size (default {PAPER_LR}, the paper's)")
    robust.add_argument("--data", default=None, help="dataset name (default: the teacher checkpoint's)")
    robust.add_argument("--root", default=None, help="dataset folder (default: the dataset's default places)")
    robust.add_argument("--split", default="test", choices=["train", "test"], help="which split (default test)")
    robust.add_argument("--limit", type=int, default=1000,
                        help="number of validation images, drawn stratified by class (default 1000; 0 = all)")
    robust.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    robust.add_argument("--seed", type=int, default=0, help="seed of the --limit draw (default 0)")
    robust.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    robust.add_argument("--out", default="robustness", help="output folder (default ./robustness)")
    robust.set_defaults(func=cmd_robustness)

    vis = sub.add_parser(
        "visualize-da", help="PNG grid of original, DA-perturbed and amplified-difference images",
        description="Original, perturbed and amplified-difference images with the true label, the student's and "
                    "the teacher's top-3 and the MSE of their L1-normalised logits (Wong et al., Figure 3).")
    vis.add_argument("--teacher", required=True, help="teacher checkpoint written by socratic train/distill")
    vis.add_argument("--student", required=True, help="student checkpoint written by socratic train/distill")
    vis.add_argument("--data", default=None, help="dataset name (default: the teacher checkpoint's)")
    vis.add_argument("--root", default=None, help="dataset folder (default: the dataset's default places)")
    vis.add_argument("--split", default="test", choices=["train", "test"], help="which split (default test)")
    vis.add_argument("--count", type=int, default=8, help="number of images (default 8)")
    vis.add_argument("--steps", type=int, default=1, help="DA steps (default 1, as in training)")
    vis.add_argument("--lr", type=float, default=PAPER_LR, help=f"DA step size (default {PAPER_LR})")
    vis.add_argument("--amplify", type=float, default=50.0, help="factor on the difference image (default 50)")
    vis.add_argument("--seed", type=int, default=0, help="seed of the image draw (default 0)")
    vis.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    vis.add_argument("--out", default="da.png", help="output PNG (default da.png)")
    vis.set_defaults(func=cmd_visualize_da)

    data = sub.add_parser("data", help="check (or install) a dataset and print its size")
    from socratic.registry import DATASETS  # the names come from the dataset modules (socratic.data.sources)

    data.add_argument("name", choices=DATASETS.names(), help="dataset")
    data.add_argument("--root", default=None, help="dataset folder")
    data.add_argument("--install", action="store_true",
                      help="fashion_mnist: install Debian's dataset-fashion-mnist if apt can be used, else download")
    data.add_argument("--download", action="store_true", help="allow a download when the files are missing")
    data.set_defaults(func=cmd_data)

    weights = sub.add_parser("plot-weights", help="PNG of the per-epoch mean teacher weights of a multi-teacher run")
    weights.add_argument("run_dir", help="a run folder (<output_dir>/<name>/seed<seed>)")
    weights.add_argument("--out", default=None, help="PNG path (default: <run_dir>/teacher_weights.png)")
    weights.set_defaults(func=cmd_plot_weights)

    shipped = sub.add_parser("configs", help="list or copy the configs shipped with socratic",
                             description="The paper recipes and CPU-scale configs inside the installed package. "
                                         "list [PREFIX]: their names (e.g. cifar100/kd/resnet32x4_resnet8x4); "
                                         "copy NAME: write NAME.yaml into --to (default: here) to edit and run.")
    shipped.add_argument("action", choices=["list", "copy"], help="list the names, or copy one")
    shipped.add_argument("name", nargs="?", default=None, help="list: a prefix such as cifar100/; copy: the config")
    shipped.add_argument("--to", default=".", help="copy: folder (or .yaml file) to write (default: here)")
    shipped.add_argument("--force", action="store_true", help="copy: replace an existing file")
    shipped.set_defaults(func=cmd_configs)

    demo = sub.add_parser("demo", help="teacher, student and KD student on Fashion-MNIST, with a summary table")
    demo.add_argument("--output-dir", default="runs/demo", help="where the three runs go (replaced each time)")
    demo.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the demo's own)")
    demo.add_argument("--train-subset", type=float, default=None,
                      help="fraction or count of training images (default: the demo's own)")
    demo.set_defaults(func=cmd_demo)

    search = sub.add_parser(
        "search", help="Optuna hyperparameter search over config keys (extra [hpo]); each trial is a run folder",
        description="One search worker: trials of CONFIG with the keys of SPACE (a YAML search space, see "
                    "configs/search/ and docs/distributed.md) until the study has --n-trials finished trials. "
                    "Start the same command several times (processes or machines) with a shared --storage to "
                    "search in parallel; start it again after a kill to continue. Trials go to "
                    "<output_dir>/<study>/trial<N>/seed<seed>; results.csv/.md and plots to <output_dir>/<study>.")
    search.add_argument("config", help="YAML experiment config that every trial starts from")
    search.add_argument("space", help="YAML search space: params (float, log_float, int, categorical), fixed, "
                                      "sampler, pruner")
    search.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the base config")
    search.add_argument("--kind", default="train", choices=["train", "rl-distill", "rl-dpd", "dataset-distill"],
                        help="what a trial runs: train (socratic train/distill configs, default), rl-distill "
                             "(socratic rl distill configs), rl-dpd (socratic rl dpd configs) or dataset-distill "
                             "(the distill stage of an MKDT config, whose earlier stages are read from "
                             "source_dir=...); the objective is the config's search.objective")
    search.add_argument("--n-trials", type=int, default=20,
                        help="finished (complete or pruned) trials the study should reach, over all workers "
                             "(default 20)")
    search.add_argument("--timeout", type=float, default=None, help="start no new trial after this many seconds")
    search.add_argument("--study-name", default=None, help="default: <config name>_<space file name>")
    search.add_argument("--storage", default=None,
                        help="Optuna RDB URL (sqlite:///s.db, postgresql://user:pass@host/db), a .db file, or "
                             "journal:FILE (default: sqlite <output_dir>/<study>/study.db)")
    search.add_argument("--sampler", default=None, choices=["tpe", "random", "cmaes", "qmc", "gp"],
                        help="default: the space file's, else tpe")
    search.add_argument("--pruner", default=None, choices=["hyperband", "successive_halving", "median", "none"],
                        help="default: the space file's, else hyperband over optim.epochs")
    search.add_argument("--sampler-seed", type=int, default=None,
                        help="sampler seed (for one worker: workers started together with the same seed would "
                             "sample the same points); a worker joining a study with N trials uses seed + N")
    search.add_argument("--heartbeat", type=int, default=60,
                        help="seconds between a running trial's heartbeats; a trial silent for --grace-period is "
                             "failed and re-queued (0 = off; default 60)")
    search.add_argument("--grace-period", type=int, default=None, help="default: 2 x --heartbeat")
    search.add_argument("--max-retry", type=int, default=3, help="re-queues of a stale trial (default 3)")
    search.add_argument("--no-report", action="store_true", help="do not write results and plots at the end")
    search.set_defaults(func=cmd_search)

    search_rep = sub.add_parser("search-report", help="table (CSV, markdown) and plots of one or more studies",
                                description="Write results.csv, results.md, history.png, intermediate.png and "
                                            "importance.png of each study folder made by socratic search.")
    search_rep.add_argument("studies", nargs="+", help="study folders (<output_dir>/<study>)")
    search_rep.add_argument("--storage", default=None,
                            help="the study's storage when search.json cannot give it (e.g. a URL with a password)")
    search_rep.add_argument("--study-name", default=None, help="default: the folder's study")
    search_rep.add_argument("--out", default=None, help="write into OUT/<study> instead of the study folder")
    search_rep.set_defaults(func=cmd_search_report)

    cache = sub.add_parser("cache", help="list or clear the teacher-output cache (teacher_cache in a config)",
                           description="The teacher outputs cached by runs with teacher_cache.enabled: one key per "
                                       "teacher and data stream, one entry per epoch and field.")
    cache.add_argument("action", choices=("list", "clear"))
    cache.add_argument("--dir", default=None,
                       help="the cache folder (teacher_cache.dir); default $SOCRATIC_CACHE/teacher_outputs")
    cache.add_argument("--key", action="append", help="clear only this key (repeatable)")
    cache.add_argument("--partial", action="store_true",
                       help="clear only half-written entries (left by killed runs); not while runs write the cache")
    cache.set_defaults(func=cmd_cache)

    from socratic.rl.cli import add_rl_parser  # argparse only: the RL extras are imported when an rl command runs

    add_rl_parser(sub)

    from socratic.distill_data.cli import add_dataset_distill_parser  # argparse only: torch loads when a stage runs

    add_dataset_distill_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from socratic.data import DataFormatError, DatasetNotFoundError
    from socratic.engine.checkpoint import CheckpointError
    from socratic.engine.run import NonFiniteLossError
    from socratic.reports import ReportError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may also follow options (`train c.yaml --resume optim.lr=0.1`)
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    if hasattr(args, "overrides"):
        args.overrides += overrides
        extra = [a for a in extra if a not in overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except (ConfigError, DatasetNotFoundError, DataFormatError, CheckpointError, FileNotFoundError,
            ReportError) as err:
        err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as err:
        err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
