"""Schedules as pure functions of the step or epoch: learning rate, KL weight, frozen parameters.

Being functions of the counters alone (no hidden state) is what lets a resumed run pick up
exactly where it stopped: restoring ``step`` and ``epoch`` restores every schedule.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable

from torch import nn

from seqlvm.train.config import TrainConfig


def lr_factor(config: TrainConfig, total_steps: int, steps_per_epoch: int = 1) -> Callable[[int], float]:
    """The multiplier of ``config.lr`` at each step, for ``torch.optim.lr_scheduler.LambdaLR``.

    Linear warm-up over ``lr_warmup_steps`` (factor ``(s + 1) / warmup``), then ``constant`` 1,
    a ``cosine`` / ``linear`` decay from 1 to ``lr_min_factor`` at step ``total_steps``, or the
    ``step`` staircase ``lr_step_factor ** (epoch // lr_step_epochs)`` with
    ``epoch = step // steps_per_epoch``.
    """
    warmup = config.lr_warmup_steps
    floor = config.lr_min_factor
    decay_steps = max(total_steps - warmup, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.lr_schedule == "step":
            return config.lr_step_factor ** ((step // steps_per_epoch) // config.lr_step_epochs)
        progress = min((step - warmup) / decay_steps, 1.0)
        if config.lr_schedule == "cosine":
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if config.lr_schedule == "linear":
            return floor + (1.0 - floor) * (1.0 - progress)
        return 1.0

    return factor


def kl_weight(config: TrainConfig, step: int) -> float:
    """KL weight beta at ``step``: linear from ``kl_weight_start`` to 1 over ``kl_warmup_steps``."""
    if step >= config.kl_warmup_steps:
        return 1.0
    start = config.kl_weight_start
    return start + (1.0 - start) * step / config.kl_warmup_steps


def check_freeze_patterns(model: nn.Module, patterns: Iterable[str]) -> None:
    """Raise ``ValueError`` for a freeze pattern that matches no parameter of ``model``."""
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ValueError(
                f"freeze: pattern {pattern!r} matches no parameter; parameters are {names}"
            )


def frozen_names(config: TrainConfig, names: Iterable[str], epoch: int) -> set[str]:
    """Parameter names frozen during ``epoch``: those matching a pattern frozen for more epochs."""
    active = [pattern for pattern, epochs in config.freeze.items() if epoch < epochs]
    return {name for name in names if any(fnmatch.fnmatchcase(name, p) for p in active)}
