"""Where a KD + DA step's time goes, against a KD step (resnet32x4 -> resnet8x4, batch 64, fp32 by default):
CPU (user, system) time and minor page faults of one step each, twice (the second round is the steady state),
with --select adaptive DA steps too, and with --profile the torch.profiler table of one KD and one DA step, by self
CPU time. At one thread the CPU time of a step is its work, whatever else runs on the machine.

    python benchmarks/da_profile.py --threads 1 [--select 0.5 0.25] [--profile]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from socratic.augment import DisagreementAugmentation  # noqa: E402
from socratic.context import TrainContext  # noqa: E402
from socratic.distillers import create_distiller  # noqa: E402
from socratic.engine.trainer import train_step  # noqa: E402
from socratic.models import create_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--select", type=float, nargs="*", default=[])
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teacher = create_model(args.teacher, num_classes=100).eval()
    student = create_model(args.student, num_classes=100)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32, generator=generator), torch.randint(0, 100, (64,), generator=generator)
    distiller = create_distiller("kd", student, [teacher]).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    da = DisagreementAugmentation(prob=1.0, after_every=0)
    steps = {"kd": lambda: train_step(distiller, x, y, TrainContext(), optimizer, scaler),
             "da": lambda: train_step(distiller, x, y, TrainContext(), optimizer, scaler, augmentation=da)}
    for select in args.select:
        adaptive = DisagreementAugmentation(prob=1.0, after_every=0, select=select)
        steps[f"da_select{select}"] = (lambda adaptive=adaptive: train_step(distiller, x, y, TrainContext(), optimizer,
                                                                           scaler, augmentation=adaptive))
    user: dict[str, float] = {}
    for round_ in range(2):
        for name, step in steps.items():
            before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            step()
            after = resource.getrusage(resource.RUSAGE_SELF)
            user[name] = after.ru_utime - before.ru_utime
            print(f"round {round_} {name}: minor faults {after.ru_minflt - before.ru_minflt}, user {user[name]:.3f} s, "
                  f"system {after.ru_stime - before.ru_stime:.3f} s, wall {time.perf_counter() - start:.3f} s", flush=True)
    print("user-time ratio over kd (round 1): " + ", ".join(f"{n} {t / user['kd']:.2f}" for n, t in user.items()))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, step in list(steps.items())[:2]:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step()
            print(f"--- {name}\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
