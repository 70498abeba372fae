"""Shared helpers for the benchmark scripts: wall-clock timing and table printing.

Files whose name starts with an underscore are helpers, not benchmarks: ``run_all.py`` skips them.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence


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


def median_ms(fns: Mapping[str, Callable[[], object]], budget: Budget) -> dict[str, float]:
    """Median wall-clock time in milliseconds of each function in ``fns``, by name.

    The functions are timed in interleaved rounds (every function once per round) rather than
    one after the other, so that a burst of load from elsewhere on the machine slows all of
    them alike and the ratios between them stay meaningful. The order rotates by one from round
    to round, so no function always runs right after the same one: a call that leaves the heap
    or the caches in a poor state (freeing a 5000-step autograd graph does) would otherwise slow
    the same neighbour in every round. Each function must block until its result is ready
    (``jax.block_until_ready`` for JAX); warm-up calls (compilation) are untimed.
    """
    for fn in fns.values():
        for _ in range(budget.warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    spent = 0.0
    rounds = 0
    names = list(fns)
    while rounds < budget.repeats and (rounds < budget.min_repeats or spent < budget.seconds * len(fns)):
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
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
