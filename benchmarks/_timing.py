"""Shared helpers for the benchmark scripts: wall-clock timing and table printing.

Files whose name starts with an underscore are helpers, not benchmarks: ``run_all.py`` skips them.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class Budget:
    """How hard to time one function.

    Attributes:
        repeats: the most timed calls per function.
        min_repeats: the fewest timed calls, however long they take.
        seconds: stop adding calls (past ``min_repeats``) once the timed calls add up to this.
        warmup: untimed calls made first (JIT compilation, allocator warm-up, lazy imports).
    """

    repeats: int
    min_repeats: int
    seconds: float
    warmup: int = 1


QUICK = Budget(repeats=3, min_repeats=1, seconds=1.0)
FULL = Budget(repeats=21, min_repeats=5, seconds=8.0)


def median_ms(fn: Callable[[], object], budget: Budget) -> float:
    """Median wall-clock time of ``fn()`` in milliseconds.

    ``fn`` must block until its result is ready (call ``jax.block_until_ready`` inside it for JAX);
    the warm-up calls are not timed, so one-off compilation is excluded.
    """
    for _ in range(budget.warmup):
        fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < budget.repeats and (len(times) < budget.min_repeats or spent < budget.seconds):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
    return 1e3 * statistics.median(times)


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
