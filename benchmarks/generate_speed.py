"""Time generating the KVAE box training set (5000 episodes × 20 frames) with `generate_dataset`.

    .venv/bin/python benchmarks/generate_speed.py                 # workers 1 and 2, best of 3
    .venv/bin/python benchmarks/generate_speed.py --workers 2 --repeats 1

Equivalent to `seqlvm generate seqlvm/BouncingBall-v0 -n 5000 -T 20 --seed 1234 -o box.h5 -j 2`.
Target: under 30 s with 2 workers on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from seqlvm.data import generate_dataset


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="seqlvm/BouncingBall-v0")
    parser.add_argument("--episodes", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="report the best of this many runs")
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{args.env_id}: {args.episodes} episodes × {args.steps} frames, seed 1234")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "box.h5"
        for workers in args.workers:
            times, cpus = [], []
            for _ in range(args.repeats):
                cpu0, start = _cpu_seconds(), time.perf_counter()
                generate_dataset(args.env_id, out, num_episodes=args.episodes, num_steps=args.steps, seed=1234, workers=workers)
                times.append(time.perf_counter() - start)
                cpus.append(_cpu_seconds() - cpu0)
            best = min(times)
            frames = args.episodes * args.steps
            print(
                f"workers={workers}: best {best:.2f} s wall of {args.repeats} ({', '.join(f'{t:.2f}' for t in times)}), "
                f"CPU {min(cpus):.2f} s (this process + workers), {frames / best:,.0f} frames/s, "
                f"file {out.stat().st_size / 2**20:.1f} MiB, load average {os.getloadavg()[0]:.1f}"
            )


if __name__ == "__main__":
    main()
