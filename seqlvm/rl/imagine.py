"""Imagined rollouts: many action sequences stepped through a model's simulator interface at once."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from seqlvm.models import SequenceModel

__all__ = ["Imagination", "imagine"]


class Imagination(NamedTuple):
    """What a model imagines for B action sequences of H steps, P particles each.

    observations: (B, P, H, *event) decoded observations (predictive means given the sampled latents).
    latents:      (B, P, H, L) the model's latent after each step.
    log_probs:    (B, P, H) log density of each sampled latent transition (0 without noise).
    """

    observations: Tensor
    latents: Tensor
    log_probs: Tensor


def imagine(
    model: SequenceModel,
    x_context: Tensor,
    actions: Tensor,
    num_particles: int = 1,
    u_context: Tensor | None = None,
    generator: torch.Generator | None = None,
    grad: bool = False,
    noise: bool = True,
) -> Imagination:
    """Condition on a context, then step every particle through ``actions``.

    x_context: (B, T, *event), or (1, T, *event) shared by all B action sequences (then filtered
               once, and its P·B particles are independent draws from the one posterior).
    actions:   (B, H, A) encoded actions (one-hot for discrete spaces, as ``seqlvm.envs``);
               ``actions[:, h]`` leads from step T-1+h to T+h. A = the model's ``control_dim``
               (A = 0 for a model without controls).
    u_context: (B or 1, T, A) the context's actions (``u_context[:, 0]`` unused), required when
               the model has controls.
    grad:      keep the autograd graph (off by default: planning needs no gradients).
    noise:     draw the particles (the default); ``False`` follows the model's mean path instead
               (start at the posterior mean, mean transitions): deterministic, the same for every
               particle, log_probs 0.

    Particles: ``model.rollout_start`` draws P = ``num_particles`` latents per sequence, then H calls
    of ``model.rollout_step`` advance them; the same generator state gives the same result.
    """
    if not isinstance(actions, Tensor) or actions.dim() != 3:
        got = tuple(actions.shape) if isinstance(actions, Tensor) else type(actions).__name__
        raise ValueError(f"imagine: actions must have shape (B, H, A); got {got}")
    B, H, A = actions.shape
    k = int(getattr(model.config, "control_dim", 0))
    if A != k or H < 1:
        raise ValueError(f"imagine: actions must have shape (B, H >= 1, A = control_dim = {k}); got {tuple(actions.shape)}")
    if not isinstance(x_context, Tensor) or x_context.dim() < 3 or x_context.shape[0] not in (1, B):
        got = tuple(x_context.shape) if isinstance(x_context, Tensor) else type(x_context).__name__
        raise ValueError(f"imagine: x_context must have shape ({B} or 1, T, *event); got {got}")
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"imagine: num_particles must be an int >= 1; got {num_particles!r}")
    P, shared = num_particles, x_context.shape[0] == 1 and B > 1
    with torch.set_grad_enabled(grad):
        # A shared context's P·B draws, row p·B + b, are the layout of B sequences with P particles.
        carry = model.rollout_start(x_context, u_context, num_particles=P * B if shared else P, generator=generator, noise=noise)
        u = actions.repeat(P, 1, 1)
        steps = []
        for h in range(H):
            carry, step = model.rollout_step(carry, u[:, h] if k else None, generator, noise=noise)
            steps.append(step)
    observations, latents, log_probs = (torch.stack(values, 1) for values in zip(*steps))
    return Imagination(
        observations.view(P, B, H, *observations.shape[2:]).transpose(0, 1),
        latents.view(P, B, H, -1).transpose(0, 1),
        log_probs.view(P, B, H).transpose(0, 1),
    )
