"""Evaluating a model on a data set: the ELBO and its terms, and the model's own log-likelihood."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from seqlvm.models import SequenceModel


def batches(
    data: Dataset, batch_size: int, device: torch.device, dtype: torch.dtype
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
    """``(x, mask, u)`` batches of ``data`` in order, moved to ``device``; ``x`` and ``u`` in ``dtype``.

    x: (B, T, *event); mask: (B, T) or (B, T, D) bool, or None; u: (B, T, A), or None.
    """
    for batch in DataLoader(data, batch_size=batch_size, shuffle=False):
        yield to_device(batch, device, dtype)


def to_device(
    batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Split a collated batch dict into ``(x, mask, u)`` on ``device`` (see :func:`batches`)."""
    x = batch["x"].to(device=device, dtype=dtype)
    mask = batch["mask"].to(device=device, dtype=torch.bool) if "mask" in batch else None
    u = batch["u"].to(device=device, dtype=dtype) if "u" in batch else None
    return x, mask, u


@torch.no_grad()
def evaluate(
    model: SequenceModel,
    data: Dataset,
    *,
    batch_size: int = 32,
    log_likelihood: bool = False,
    seed: int = 0,
) -> dict[str, float]:
    """Mean ELBO loss and terms over ``data`` (each sequence counted once), on the model's device.

    The model runs in eval mode with ``kl_weight = 1`` so the loss is the true negative ELBO
    whatever warm-up the training was in; both are restored afterwards. The Monte Carlo draws of
    the ELBO and the bounds come from torch's generator seeded with ``seed``, so the same call
    gives the same numbers; the caller's random state is left as it was.

    With ``log_likelihood=True`` also ``log_likelihood`` (mean over sequences of the model's
    ``log_likelihood(x)``: exact for LGSSM, an IWAE bound otherwise) and ``log_likelihood_per_step``
    (the same divided by T).
    """
    parameter = next(model.parameters())
    was_training, kl_weight = model.training, model.kl_weight
    model.eval()
    model.kl_weight = 1.0
    sums: dict[str, float] = {}
    count = 0
    # fork_rng: seeded draws here, the caller's random state untouched (the Trainer validates mid-run).
    devices = list(range(torch.cuda.device_count())) if parameter.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for x, mask, u in batches(data, batch_size, parameter.device, parameter.dtype):
                n = x.shape[0]
                out = model.elbo(x, mask=mask, u=u)
                values = {"loss": out.loss, **out.terms}
                if log_likelihood:
                    ll = model.log_likelihood(x, mask=mask, u=u)
                    values["log_likelihood"] = ll.mean()
                    values["log_likelihood_per_step"] = ll.mean() / x.shape[1]
                for name, value in values.items():
                    sums[name] = sums.get(name, 0.0) + float(value) * n
                count += n
    finally:
        model.train(was_training)
        model.kl_weight = kl_weight
    if count == 0:
        raise ValueError("evaluate: the data set is empty")
    return {name: total / count for name, total in sums.items()}
