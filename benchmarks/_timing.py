"""Shared helpers for the benchmark scripts: wall-clock timing and table printing.

Files whose name starts with an underscore are helpers, not benchmarks: ``run_all.py`` skips them.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Collection, Mapping, Sequence


@dataclass(frozen=True)
class Budget:
    """How hard to time a group of functions.

    Attributes:
        repeats: the most timed rounds (one call of every function per round).
        min_repeats: the fewest rounds, however long they take.
        seconds: stop adding rounds (past ``min_repeats``) once the timed calls add up to this
            many seconds per function on average.
        warmup: untimed calls of each function made first (JIT compilation, allocator warm-up).
    """

    repeats: int
    min_repeats: int
    seconds: float
    warmup: int = 1


QUICK = Budget(repeats=3, min_repeats=1, seconds=1.0)
FULL = Budget(repeats=21, min_repeats=5, seconds=8.0)


def median_ms(
    fns: Mapping[str, Callable[[], object]], budget: Budget, apart: Collection[str] = ()
) -> dict[str, float]:
    """Median wall-clock time in milliseconds of each function in ``fns``, by name.

    The functions are timed in interleaved rounds (every function once per round) rather than
    one after the other, so that a burst of load from elsewhere on the machine slows all of
    them alike and the ratios between them stay meaningful. The functions named in ``apart``
    get rounds of their own afterwards: a call that frees a very large autograd graph (a plain
    loop's gradient over 5000 steps) leaves the heap so that the next call in the round took
    twice its time. Each function must block until its result is ready
    (``jax.block_until_ready`` for JAX); warm-up calls (compilation) are untimed.
    """
    groups = [{k: f for k, f in fns.items() if k not in apart}, {k: f for k, f in fns.items() if k in apart}]
    return {name: ms for group in groups if group for name, ms in _interleaved(group, budget).items()}


def _interleaved(fns: Mapping[str, Callable[[], object]], budget: Budget) -> dict[str, float]:
    for fn in fns.values():
        for _ in range(budget.warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    spent = 0.0
    rounds = 0
    while rounds < budget.repeats and (rounds < budget.min_repeats or spent < budget.seconds * len(fns)):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            times[name].append(elapsed)
            spent += elapsed
        rounds += 1
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    """Render ``rows`` under ``header`` as aligned plain text or as a GitHub markdown table.

    Cells are strings already; text columns are left-aligned and every other column
    (anything that parses as a number or ratio) is right-aligned.
    """

    def numeric(col: int) -> bool:
        cells = [r[col] for r in rows if r[col] not in ("", "-")]
        return bool(cells) and all(_looks_numeric(c) for c in cells)

    right = [numeric(c) for c in range(len(header))]
    if markdown:
        lines = ["| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join("---:" if r else ":---" for r in right) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right))

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _looks_numeric(cell: str) -> bool:
    try:
        float(cell.rstrip("x"))
    except ValueError:
        return False
    return True
