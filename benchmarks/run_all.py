"""Run every benchmark script in this folder, each in its own Python process (``make bench``).

A benchmark is any ``benchmarks/*.py`` other than this file and the ``_``-prefixed helpers; each
is a standalone script (``if __name__ == "__main__": main()``) run as ``python SCRIPT``. The
common flags are ``--quick`` (fewer repeats) and ``--markdown`` (markdown tables for
``benchmarks/RESULTS.md``): this runner forwards each of them to the scripts whose ``--help``
lists it and runs the others with their defaults (a script without ``--quick`` is its own
quick run). Scripts run in separate processes so that one script's global settings (torch
threads, JAX's x64 mode) never leak into the next.

Usage::

    python benchmarks/run_all.py                 # every benchmark, full repeats
    python benchmarks/run_all.py --quick         # every benchmark, smoke-test repeats
    python benchmarks/run_all.py --markdown > out.md

The exit code is 1 if any script fails (a correctness gate included), 0 otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def benchmark_scripts() -> list[Path]:
    """The benchmark scripts in this folder, sorted by name."""
    this = Path(__file__).name
    return sorted(p for p in HERE.glob("*.py") if p.name != this and not p.name.startswith("_"))


def accepted_flags(script: Path, flags: list[str]) -> list[str]:
    """The subset of ``flags`` that ``script --help`` documents."""
    help_text = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=False
    ).stdout
    return [flag for flag in flags if flag in help_text.split()]


def main(argv: list[str] | None = None) -> int:
    """Run each script with the flags it accepts; exit status 1 if any script fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="forward --quick to every script")
    parser.add_argument("--markdown", action="store_true", help="forward --markdown to every script")
    args = parser.parse_args(argv)
    flags = [f for f, on in (("--quick", args.quick), ("--markdown", args.markdown)) if on]
    failed = []
    for script in benchmark_scripts():
        print(f"\n{'## ' if args.markdown else '== '}{script.name}\n", flush=True)
        code = subprocess.call([sys.executable, str(script), *accepted_flags(script, flags)])
        if code != 0:
            failed.append(f"{script.name} (exit {code})")
    if failed:
        print("\nfailed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
