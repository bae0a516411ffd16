"""`socratic rl ...`: train-teacher, distill, dpd, evaluate, report (added to the main parser by socratic.cli).

Only argparse is imported here; the commands import gymnasium / Stable-Baselines3 when they run, so a missing
extra is a clear error (exit code 2) of the command that needs it, never of `socratic --help`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from socratic.engine.run_options import add_run_options, print_config


def _console() -> Any:
    from rich.console import Console

    return Console()


TRUST_PICKLE_HELP = ("load an SB3 .zip with Stable-Baselines3's own loader, which unpickles (runs) the Python "
                     "objects stored in it: only for files you trust (default: read without unpickling)")


def _add_config_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("config", help=f"YAML config (see configs/rl/, e.g. {example}; keys in docs/methods/rl.md)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides applied after the file, e.g. optim.epochs=10 seed=1 env.game=Asterix")
    add_run_options(parser)


def _run(args: argparse.Namespace, config: Any, run: Any) -> int:
    """`--print-config`, or the run with the folder options of the command line; prints the summary."""
    if args.print_config:
        print_config(config)
        return 0
    summary = run(config, overwrite=args.overwrite, resume=args.resume,
                  accept_config_changes=args.accept_config_changes)
    _console().print_json(json.dumps(summary))
    return 0


def cmd_train_teacher(args: argparse.Namespace) -> int:
    from socratic.rl.config import TrainTeacherConfig, load_rl_config
    from socratic.rl.envs import gymnasium

    config = load_rl_config(TrainTeacherConfig, args.config, args.overrides)
    gymnasium("socratic rl train-teacher")
    if config.algo != "dqn":
        from socratic.rl.sb3_teacher import train_sb3_teacher  # needs stable-baselines3

        return _run(args, config, train_sb3_teacher)
    from socratic.rl.dqn import train_teacher  # needs stable-baselines3

    return _run(args, config, train_teacher)


def cmd_distill(args: argparse.Namespace) -> int:
    from socratic.rl.config import DistillConfig, load_rl_config
    from socratic.rl.distill import run_distillation

    overrides = [*args.overrides, "teacher.trust_pickle=true"] if args.trust_pickle else args.overrides
    return _run(args, load_rl_config(DistillConfig, args.config, overrides), run_distillation)


def cmd_dpd(args: argparse.Namespace) -> int:
    from socratic.rl.config import DPDConfig, load_rl_config
    from socratic.rl.envs import gymnasium

    config = load_rl_config(DPDConfig, args.config, args.overrides)
    gymnasium("socratic rl dpd")
    from socratic.rl.dpd import run_dpd  # needs stable-baselines3

    return _run(args, config, run_dpd)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from socratic.rl.evaluation import evaluate_rl_checkpoint

    result = evaluate_rl_checkpoint(args.checkpoint, suite=args.suite, game=args.game, episodes=args.episodes,
                                    num_envs=args.num_envs, seed=args.seed, epsilon=args.epsilon,
                                    max_episode_steps=args.max_episode_steps, device=args.device,
                                    trust_pickle=args.trust_pickle)
    _console().print_json(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from socratic.rl.reports import rl_csv, rl_markdown, rl_rows

    rows = rl_rows(args.runs, baseline=args.baseline)
    _console().print(rl_markdown(rows, args.baseline), markup=False, highlight=False, soft_wrap=True)
    if args.csv:
        Path(args.csv).write_text(rl_csv(rows))
    return 0


def add_rl_parser(sub: Any) -> argparse.ArgumentParser:
    """Add `rl` and its subcommands to the main parser's subparsers."""
    rl = sub.add_parser("rl", help="policy distillation for RL agents (MinAtar, Atari, MuJoCo, classic control): "
                                   "teachers, PD, PD+DA, DPD",
                        description="Policy distillation for DQN agents (needs the rl extra, and minatar or atari: "
                                    'pip install "socratic-kd[rl,minatar]"). Run folders are '
                                    "<output_dir>/<name>/seed<seed>.")
    rl_sub = rl.add_subparsers(dest="rl_command", required=True)

    teacher = rl_sub.add_parser("train-teacher", help="train a DQN, PPO, SAC or TD3 teacher with Stable-Baselines3",
                                description="Train a teacher with SB3 (algo: dqn for MinAtar/Atari; ppo, sac or td3 "
                                            "for classic_control/mujoco) and keep the best network by periodic "
                                            "greedy evaluation as checkpoints/best.zip (SB3; DQN also best.pt).")
    _add_config_arguments(teacher, "configs/rl/minatar_breakout_teacher.yaml")
    teacher.set_defaults(func=cmd_train_teacher)

    distill = rl_sub.add_parser("distill", help="distil a teacher (any SB3 .zip, RL-Zoo folder or socratic .pt) into "
                                                "a small Q-network or MLP policy (PD, PD+DA)",
                                description="Policy distillation (Rusu et al. 2016) with optional Disagreement "
                                            "Augmentation on states (DA paper, Sec. 3.3).")
    _add_config_arguments(distill, "configs/rl/minatar_breakout_pd.yaml")
    distill.add_argument("--trust-pickle", action="store_true",
                         help=TRUST_PICKLE_HELP + "; the same as teacher.trust_pickle=true")
    distill.set_defaults(func=cmd_distill)

    dpd = rl_sub.add_parser("dpd", help="dual policy distillation between two DDPG, PPO or DQN peers (or the two "
                                        "alone)",
                            description="Dual policy distillation (Lai et al. 2020) with two peer learners: "
                                        "dpd.learner=ddpg or ppo on continuous control (mujoco, classic_control), "
                                        "dqn on MinAtar/Atari; dpd.enabled=false trains the same two learners alone.")
    _add_config_arguments(dpd, "configs/rl/minatar_breakout_dpd.yaml")
    dpd.set_defaults(func=cmd_dpd)

    evaluate = rl_sub.add_parser("evaluate", help="greedy score of a Q-network or policy checkpoint over N episodes",
                                 description="Play N episodes greedily and print mean ± std of the score.")
    evaluate.add_argument("checkpoint",
                          help="a .pt written by socratic rl (knows its game), an SB3 .zip or an RL-Zoo "
                               "/ Hugging Face folder (read without unpickling; needs --suite and --game)")
    evaluate.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    evaluate.add_argument("--suite", default=None,
                          help="a registered game suite, e.g. minatar or atari (default: from the checkpoint)")
    evaluate.add_argument("--game", default=None, help="game, e.g. Breakout (default: from the checkpoint)")
    evaluate.add_argument("--episodes", type=int, default=100, help="episodes to play (default 100; the paper: 1000)")
    evaluate.add_argument("--num-envs", type=int, default=8, help="environments played at once (default 8)")
    evaluate.add_argument("--seed", type=int, default=1, help="seed of the environments (default 1)")
    evaluate.add_argument("--epsilon", type=float, default=0.0,
                          help="probability of a uniformly random action (default 0; 1 = random play)")
    evaluate.add_argument("--max-episode-steps", type=int, default=None,
                          help="truncate episodes after this many agent steps (default: 10,000 MinAtar, 27,000 Atari)")
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    evaluate.add_argument("--json", default=None, help="also write the result to this JSON file")
    evaluate.set_defaults(func=cmd_evaluate)

    report = rl_sub.add_parser("report", help="table of RL runs: mean ± std over seeds, relative score",
                               description="Tabulate RL run folders (teacher, distill, dpd) grouped by config.")
    report.add_argument("runs", nargs="+", help="run folders, or folders to search for them")
    report.add_argument("--csv", default=None, help="also write the table as CSV to this file")
    report.add_argument("--baseline", default=None,
                        help="name of a run group: add per-seed scores, the difference of means and Welch's t "
                             "against it")
    report.set_defaults(func=cmd_report)
    return rl


__all__ = ["add_rl_parser"]
