"""Observation masks for the imputation protocols of the KVAE paper (models.md §2.7).

A mask is a bool tensor ``(B, T)``, True = observed. Both protocols keep a prefix of frames
observed so the model can lock on to the dynamics before anything is missing.

Command-line spec strings (``seqlvm impute --mask ...``), parsed by :func:`parse_mask_spec`:

- ``random:P`` — frames after the first 4 are missing independently with probability P;
  ``random:P:PREFIX`` sets the always-observed prefix length.
- ``block:K`` — K consecutive frames missing right after the first 4 (frames 4 … 3+K);
  ``block:K:START`` starts the block at frame START instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MaskSpec", "block_mask", "parse_mask_spec", "random_mask"]


def random_mask(
    batch: int,
    T: int,
    p: float,
    num_observed_prefix: int = 4,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(batch, T)`` bool: ``mask[:, t] = True`` for ``t < num_observed_prefix``, otherwise
    ``mask[b, t] ~ Bernoulli(1 − p)`` independently (missing at random with probability ``p``)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p: got {p}; expected a probability in [0, 1]")
    _check_sizes(batch, T)
    if not 0 <= num_observed_prefix <= T:
        raise ValueError(f"num_observed_prefix: got {num_observed_prefix}; expected 0..T = 0..{T}")
    u = torch.rand(batch, T, generator=generator, device=device if generator is None else generator.device)
    mask = u >= p
    mask[:, :num_observed_prefix] = True
    return mask.to(device) if device is not None else mask


def block_mask(
    batch: int, T: int, k: int, start: int = 4, device: torch.device | str | None = None
) -> torch.Tensor:
    """``(batch, T)`` bool, all True except frames ``start … start + k − 1`` ("missing in the middle")."""
    _check_sizes(batch, T)
    if k < 0 or start < 0 or start + k > T:
        raise ValueError(f"k, start: got a block of {k} frames from frame {start}; it must fit in T = {T} frames")
    mask = torch.ones(batch, T, dtype=torch.bool, device=device)
    mask[:, start : start + k] = False
    return mask


def _check_sizes(batch: int, T: int) -> None:
    if batch < 1 or T < 1:
        raise ValueError(f"batch, T: got ({batch}, {T}); expected positive sizes")


@dataclass(frozen=True)
class MaskSpec:
    """A parsed mask protocol; call it as ``spec(batch, T, generator=None)`` for a ``(batch, T)`` mask.

    kind:  ``"random"`` (uses ``p`` and ``prefix``) or ``"block"`` (uses ``k`` and ``start``).
    """

    kind: str
    p: float = 0.0
    prefix: int = 4
    k: int = 0
    start: int = 4

    def __post_init__(self) -> None:
        if self.kind not in ("random", "block"):
            raise ValueError(f"MaskSpec: kind must be 'random' or 'block'; got {self.kind!r}")

    def __call__(
        self, batch: int, T: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        if self.kind == "random":
            return random_mask(batch, T, self.p, self.prefix, generator=generator, device=device)
        return block_mask(batch, T, self.k, self.start, device=device)

    def __str__(self) -> str:
        return f"random:{self.p}:{self.prefix}" if self.kind == "random" else f"block:{self.k}:{self.start}"


def parse_mask_spec(spec: str) -> MaskSpec:
    """Parse ``"random:P[:PREFIX]"`` or ``"block:K[:START]"`` (see the module docstring)."""
    expected = "expected 'random:P[:PREFIX]' (0 <= P <= 1) or 'block:K[:START]' (integers >= 0)"
    parts = spec.strip().split(":")
    try:
        if parts[0] == "random" and len(parts) in (2, 3):
            p = float(parts[1])
            prefix = int(parts[2]) if len(parts) == 3 else 4
            if 0.0 <= p <= 1.0 and prefix >= 0:
                return MaskSpec("random", p=p, prefix=prefix)
        elif parts[0] == "block" and len(parts) in (2, 3):
            k = int(parts[1])
            start = int(parts[2]) if len(parts) == 3 else 4
            if k >= 0 and start >= 0:
                return MaskSpec("block", k=k, start=start)
    except ValueError:
        pass
    raise ValueError(f"mask: got {spec!r}; {expected}")
