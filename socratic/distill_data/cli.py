"""`socratic dataset-distill STAGE CONFIG` (teacher, experts, select, distill, eval) and `... report RUNS`.

Only argparse is imported here; a stage imports torch and its modules when it runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from socratic.engine.run_options import add_run_options, print_config

STAGE_HELP = {
    "teacher": "train the self-supervised teacher (Barlow Twins / SimCLR), probe it, save its representations",
    "experts": "train K ConvNets by MSE to the teacher's representations; save their parameters every epoch",
    "select": "the high-loss examples under the experts' epoch-1 parameters (2 %, 5 %)",
    "distill": "trajectory matching: learn synthetic images, target representations and step size",
    "eval": "pre-train a fresh ConvNet on a set (distilled, subset or none), then L-BFGS linear probes",
}


def _console() -> Any:
    from rich.console import Console

    return Console()


def cmd_stage(args: argparse.Namespace) -> int:
    from socratic.distill_data.config import load_mkdt_config

    cfg = load_mkdt_config(args.config, args.overrides)
    if args.print_config:
        print_config(cfg)
        return 0
    from socratic.distill_data.pipeline import run_stage

    spelled = " ".join([args.config, *args.overrides])
    summary = run_stage(args.stage, cfg, config_path=spelled, resume=args.resume, overwrite=args.overwrite,
                        accept_config_changes=args.accept_config_changes)
    _console().print_json(json.dumps(summary, default=str))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from socratic.distill_data.report import eval_rows, rows_to_markdown

    rows = eval_rows(args.runs)
    _console().print(rows_to_markdown(rows), markup=False, highlight=False, soft_wrap=True)
    if args.markdown:
        Path(args.markdown).write_text(rows_to_markdown(rows))
    return 0


def add_dataset_distill_parser(sub: Any) -> argparse.ArgumentParser:
    """Add `dataset-distill` and its stages to the main parser's subparsers."""
    parser = sub.add_parser(
        "dataset-distill", help="MKDT: distil a small synthetic pre-training set from a self-supervised teacher",
        description="Dataset distillation via knowledge distillation (Joshi et al., ICLR 2025), in five stages run "
                    "in order: teacher, experts, select, distill, eval (docs/methods/mkdt.md). Stage S writes "
                    "<output_dir>/<name>/<S label>/seed<seed>.")
    stages = parser.add_subparsers(dest="stage", required=True)
    for stage, text in STAGE_HELP.items():
        p = stages.add_parser(stage, help=text, description=text)
        p.add_argument("config", help="YAML config (see configs/mkdt/, e.g. configs/mkdt/cifar10_jpeg_cpu.yaml)")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="dotted overrides applied after the file, e.g. eval.source=random seed=1")
        add_run_options(p)
        p.set_defaults(func=cmd_stage)
    report = stages.add_parser("report", help="table of eval runs: linear-probe top-1, mean ± std over seeds",
                               description="Group the eval stage's run folders by pre-training set and tabulate "
                                           "the probe accuracies (mean ± std over seeds).")
    report.add_argument("runs", nargs="+", help="run folders, or folders to search for them")
    report.add_argument("--markdown", default=None, help="also write the table to this file")
    report.set_defaults(func=cmd_report)
    return parser


__all__ = ["add_dataset_distill_parser"]
