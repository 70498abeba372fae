"""The ``Trainer``: one loop for every model of the protocol, single process or under ``torchrun``.

Per step: set the schedules (learning rate, ``model.kl_weight``, frozen parameters), minimise
``model.elbo(x, mask, u).loss``, clip the global gradient norm, and log every ELBO term. Every
``eval_every`` steps (or each epoch) validate, then write ``ckpt/last.pt`` (and ``best.pt`` on a
better validation loss). The run is a function of its config and seed: resuming from ``last.pt``
reproduces the uninterrupted run bit for bit on CPU.
"""

from __future__ import annotations

import gc
import itertools
import math
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from seqlvm.models import ELBO, SequenceModel
from seqlvm.train import distributed
from seqlvm.train.checkpoint import check_run_dir, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from seqlvm.train.config import TrainConfig
from seqlvm.train.evaluation import evaluate, to_device
from seqlvm.train.metrics import MetricsLog
from seqlvm.train.schedule import check_freeze_patterns, frozen_names, kl_weight, lr_factor


class NonFiniteLossError(ArithmeticError):
    """The loss, an ELBO term or the gradient norm went NaN/inf; the message says which and when."""


@dataclass(frozen=True)
class TrainResult:
    """How a run ended.

    run_dir:     the run folder (metrics.csv, config.toml, ckpt/).
    step, epoch: optimiser steps taken and the epoch in progress when it ended.
    reason:      "completed", "early_stopping" or "interrupted" (Ctrl-C / SIGTERM, checkpoint saved).
    best_metric: the best monitored loss (validation loss, else training loss).
    metrics:     the last evaluation's metrics.
    """

    run_dir: Path
    step: int
    epoch: int
    reason: str
    best_metric: float
    metrics: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _ELBOForward(nn.Module):
    """Routes ``forward`` to ``model.elbo``: DistributedDataParallel only synchronises gradients
    of computations that go through the wrapped module's ``forward``."""

    def __init__(self, model: SequenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, u: torch.Tensor | None) -> ELBO:
        return self.model.elbo(x, mask=mask, u=u)


class _ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can skip the first ``skip`` indices of this rank's epoch order,
    so a run resumed mid-epoch sees exactly the batches the uninterrupted run would have seen."""

    skip: int = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return super().__len__() - self.skip


def check_batch(config: TrainConfig, num_sequences: int, world_size: int) -> None:
    """Refuse a ``batch_size`` that does not split over ``world_size`` processes, or that leaves an
    epoch of ``num_sequences`` training sequences without one full batch (the sampler drops the
    last partial batch). ``seqlvm train --nproc`` runs it before launching the processes."""
    if config.batch_size % world_size:
        raise ValueError(f"batch_size: {config.batch_size} does not split over {world_size} processes")
    if (num_sequences // world_size) // (config.batch_size // world_size) == 0:
        raise ValueError(f"batch_size: {config.batch_size} is larger than the {num_sequences} training sequences")


class Trainer:
    """Trains ``model`` on ``train_data`` as ``config`` says.

    config:     the run's options (see :class:`TrainConfig`).
    model:      any :class:`SequenceModel`; moved to the run's device and dtype.
    train_data: a torch ``Dataset`` of dicts: ``"x"`` (T, *event) float, optional ``"u"`` (T, A)
                and ``"mask"`` (T,) or (T, D) bool (True = observed).
    valid_data: the same for validation, or None (best.pt then tracks the training loss).

    Under ``torchrun`` (``RANK`` set) construction joins the process group, which :meth:`fit`
    leaves at its end: a Trainer fits once.
    """

    def __init__(
        self,
        config: TrainConfig,
        model: SequenceModel,
        train_data: Dataset,
        valid_data: Dataset | None = None,
    ) -> None:
        self.config = config
        self.ctx = distributed.setup(config.device)
        check_batch(config, len(train_data), self.ctx.world_size)
        check_freeze_patterns(model, config.freeze)
        self.dtype: torch.dtype = getattr(torch, config.dtype)
        self.model = model.to(device=self.ctx.device, dtype=self.dtype)
        self.train_data = train_data
        self.valid_data = valid_data
        self.run_dir = config.run_dir
        self.ckpt_dir = self.run_dir / "ckpt"

        self.local_batch = config.batch_size // self.ctx.world_size
        # drop_last: every step sees a full global batch, so the gradient is the same batch mean
        # whatever the number of processes.
        self.sampler = _ResumableSampler(
            train_data, num_replicas=self.ctx.world_size, rank=self.ctx.rank, shuffle=True,
            seed=config.seed, drop_last=True,
        )
        self.steps_per_epoch = len(self.sampler) // self.local_batch
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.loader = DataLoader(
            train_data, batch_size=self.local_batch, sampler=self.sampler, drop_last=True,
            num_workers=config.num_workers,
            # An explicit generator, reseeded every epoch, keeps the loader from drawing worker
            # seeds from the global torch RNG, which would make the data stream depend on where
            # a run was resumed.
            generator=torch.Generator(),
        )

        self._trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        params = [p for name, p in model.named_parameters() if name in self._trainable]
        self.optimizer = _optimizer(config, params)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(config, self.total_steps, self.steps_per_epoch)
        )

        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_metric = math.inf
        self.stale_evals = 0
        self.metrics: dict[str, float] = {}
        self.last_eval_step = 0
        # Running sums since the last evaluation (the training loss, monitored when there is no
        # validation set) and since the last metrics row. Both are in the checkpoint, so a
        # resumed run logs and decides exactly as an uninterrupted one.
        self._interval_loss = [0.0, 0]
        self._log_interval: tuple[dict[str, float], int] = ({}, 0)
        self._frozen: set[str] | None = None
        self._forward: nn.Module = _ELBOForward(self.model)
        self._stop_signal: int | None = None
        self._log: MetricsLog | None = None

    # ------------------------------------------------------------------ public

    def fit(self, resume: bool = False) -> TrainResult:
        """Train until ``max_steps`` / ``epochs``, early stopping, or Ctrl-C (checkpoint saved).

        resume: continue from ``RUN/ckpt/last.pt``. Without it, a run folder that already holds a
                checkpoint is refused rather than overwritten.

        Raises NonFiniteLossError when a loss term or the gradient norm goes NaN/inf; the last
        good checkpoint is kept.
        """
        last = check_run_dir(self.run_dir, resume)
        if resume:
            self._restore(load_checkpoint(last))
        else:
            # Each rank's own stream for the model's random draws (sampling ELBOs, dropout).
            seed_everything(self.config.seed + self.ctx.rank)
        previous_handlers = self._catch_signals()
        progress = None
        try:
            if self.ctx.is_main:
                self.config.save_toml(self.run_dir / "config.toml")
                self._log = MetricsLog(
                    self.run_dir / "metrics.csv",
                    resume_step=self.step if resume else None,
                    tensorboard_dir=self.run_dir / "tensorboard" if self.config.tensorboard else None,
                )
                progress = _Progress(self.total_steps, self.step) if self.config.progress else None
            reason = self._loop(progress)
            # Rank 0 may still be writing the last checkpoint; leaving the process group while a
            # peer is busy can abort gloo's background threads at exit.
            distributed.barrier(self.ctx)
            return TrainResult(self.run_dir, self.step, self.epoch, reason, self.best_metric, self.metrics)
        finally:
            if progress is not None:
                progress.close()
            if self._log is not None:
                self._log.close()
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            # Hand the model back as it came: no stage's freeze outlives the run.
            for name, p in self.model.named_parameters():
                p.requires_grad_(name in self._trainable)
            # The DDP wrapper holds the process group; it must be gone before the group is
            # destroyed, or gloo's threads are torn down only at interpreter exit (SIGABRT).
            self._forward = _ELBOForward(self.model)
            self._frozen = None
            gc.collect()
            distributed.teardown(self.ctx)

    # ------------------------------------------------------------------ the loop

    def _loop(self, progress: "_Progress | None") -> str:
        config = self.config
        if self._out_of_patience():  # a resumed run that had stopped early stays stopped
            return "early_stopping"
        interval_start = time.perf_counter()
        while self.step < self.total_steps:
            self._apply_freeze()
            self.sampler.set_epoch(self.epoch)
            self.loader.generator.manual_seed(config.seed + self.epoch)
            self.sampler.skip = self.batch_in_epoch * self.local_batch
            for batch in self.loader:
                values = self._train_step(batch)
                self.step += 1
                self.batch_in_epoch += 1
                sums, count = self._log_interval
                self._log_interval = ({k: sums.get(k, 0.0) + v for k, v in values.items()}, count + 1)
                if progress is not None:
                    progress.update(self.step, values["train/loss"])
                if self.step % config.log_every == 0 or self.step == self.total_steps:
                    self._write_train_row(time.perf_counter() - interval_start, progress)
                    interval_start = time.perf_counter()
                if config.eval_every and self.step % config.eval_every == 0:
                    paused = time.perf_counter()
                    if self._evaluate_and_save():
                        return "early_stopping"
                    interval_start += time.perf_counter() - paused  # speed counts training only
                if self.batch_in_epoch == self.steps_per_epoch:
                    break  # the epoch's end is handled below, before any stop request
                if self._stop_requested():
                    return "interrupted"
                if self.step >= self.total_steps:
                    break
            if self.batch_in_epoch == self.steps_per_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
                if not config.eval_every and self._evaluate_and_save():
                    return "early_stopping"
            if self._stop_requested():
                return "interrupted"
        if self.last_eval_step != self.step:
            self._evaluate_and_save()
        return "completed"

    def _write_train_row(self, elapsed: float, progress: "_Progress | None") -> None:
        """Write the mean of every training metric since the last row, and the speed."""
        sums, count = self._log_interval
        row = {name: total / count for name, total in sums.items()}
        row["seq_per_s"] = count * self.config.batch_size / max(elapsed, 1e-9)
        row["epoch"] = self.epoch
        self._write_row(row)
        if progress is not None:
            progress.speed(row["seq_per_s"])
        self._log_interval = ({}, 0)

    def _stop_requested(self) -> bool:
        """After a Ctrl-C / SIGTERM on any process: save ``last.pt`` (all processes) and say stop."""
        if not distributed.any_process(self._stop_signal is not None, self.ctx):
            return False
        self._save("last.pt")
        return True

    def _train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        x, mask, u = to_device(batch, self.ctx.device, self.dtype)
        self.model.kl_weight = kl_weight(self.config, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        out = self._forward(x, mask, u)
        out.loss.backward()

        names = ["loss", *out.terms]
        for name, term in out.terms.items():
            if term.dim() != 0:
                raise ValueError(f"elbo: term {name!r} must be a scalar, got shape {tuple(term.shape)}")
        local = torch.stack([out.loss.detach(), *(t.detach() for t in out.terms.values())]).double()
        values = distributed.all_mean(local, self.ctx).tolist()
        bad = [f"ELBO term {name!r} is {v}" for name, v in zip(names[1:], values[1:]) if not math.isfinite(v)]
        # The loss is built from the terms, so it goes bad with them: name the terms, and the loss
        # only when no term did.
        if bad or not math.isfinite(values[0]):
            self._diverged(", ".join(bad) if bad else f"the loss is {values[0]}")

        # With no clipping the bound is inf: the scale factor clamps to exactly 1 and the call
        # only measures the (pre-clipping) global norm.
        grad_norm = float(torch.nn.utils.clip_grad_norm_(
            [p for p in self.model.parameters() if p.grad is not None],
            self.config.grad_clip or math.inf,
        ))
        if not math.isfinite(grad_norm):
            self._diverged(f"the gradient norm is {grad_norm}")

        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self._interval_loss[0] += values[0]
        self._interval_loss[1] += 1
        row = {f"train/{name}": value for name, value in zip(names, values)}
        row.update(lr=lr, grad_norm=grad_norm, kl_weight=self.model.kl_weight)
        return row

    def _diverged(self, what: str) -> None:
        last = self.ckpt_dir / "last.pt"
        kept = f"last good checkpoint: {last}" if last.is_file() else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"training stopped at step {self.step + 1} (epoch {self.epoch}): {what}; {kept}"
        )

    def _apply_freeze(self) -> None:
        """Set ``requires_grad`` for this epoch's stage and (re)wrap the model for DDP.

        DDP registers the parameters that require gradients when it is built, so a stage change
        builds a new wrapper; frozen parameters get no gradient and optimisers skip them.
        """
        frozen = frozen_names(self.config, self._trainable, self.epoch)
        if frozen == self._frozen:
            return
        self._frozen = frozen
        for name, p in self.model.named_parameters():
            p.requires_grad_(name in self._trainable and name not in frozen)
        forward = _ELBOForward(self.model)
        if self.ctx.distributed:
            # find_unused_parameters: a model may own parameters its ELBO does not touch (e.g.
            # ones used only for sampling); DDP would otherwise wait for their gradients forever.
            forward = DistributedDataParallel(
                forward,
                device_ids=[self.ctx.device.index] if self.ctx.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self._forward = forward

    # ------------------------------------------------------------------ evaluation, checkpoints

    def _evaluate_and_save(self) -> bool:
        """Validate, update best/last checkpoints; True when early stopping says stop."""
        if self.valid_data is not None:
            metrics = None
            if self.ctx.is_main:
                metrics = evaluate(self.model, self.valid_data, batch_size=self.local_batch, seed=self.config.seed)
            metrics = distributed.broadcast_object(metrics, self.ctx)
            metrics = {f"valid/{name}": value for name, value in metrics.items()}
            monitored = metrics["valid/loss"]
        else:
            total, count = self._interval_loss
            monitored = total / max(count, 1)
            metrics = {"train/interval_loss": monitored}
        self._interval_loss = [0.0, 0]
        self.last_eval_step = self.step
        self.metrics = metrics
        if self.ctx.is_main:
            self._write_row(dict(metrics, epoch=self.epoch))
        improved = monitored < self.best_metric
        if improved:
            self.best_metric = monitored
            self.stale_evals = 0
        else:
            self.stale_evals += 1
        self._save("last.pt")
        if improved:
            self._save("best.pt")
        return self._out_of_patience()

    def _out_of_patience(self) -> bool:
        patience = self.config.early_stopping_patience
        return bool(patience) and self.stale_evals >= patience

    def _write_row(self, row: dict[str, float]) -> None:
        if self._log is not None:
            self._log.write(self.step, row)

    def _save(self, name: str) -> None:
        # Every rank's generator state, so each rank of a resumed run draws what it would have.
        rng = distributed.gather_objects(rng_state(), self.ctx)
        if not self.ctx.is_main:
            return
        save_checkpoint(self.ckpt_dir / name, {
            "model_name": self.config.model,
            "model_config": self.model.config_dict(),
            "train_config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "rng": rng,
            "best_metric": self.best_metric,
            "stale_evals": self.stale_evals,
            "interval_loss": list(self._interval_loss),
            "log_interval": {"sums": dict(self._log_interval[0]), "steps": self._log_interval[1]},
            "last_eval_step": self.last_eval_step,
            "metrics": self.metrics,
        })

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint["model_name"] != self.config.model:
            raise ValueError(
                f"--resume: the checkpoint holds a {checkpoint['model_name']!r} model, "
                f"not {self.config.model!r}"
            )
        # The position in the epoch is counted in batches: it means the same only with the same
        # batch size, and must lie inside an epoch of this run's data.
        saved = checkpoint["train_config"].get("batch_size")
        if saved != self.config.batch_size:
            raise ValueError(
                f"--resume: the run was trained with batch_size = {saved}; got {self.config.batch_size} "
                "(resume with the same batch size, or start a new run)"
            )
        if checkpoint["batch_in_epoch"] > self.steps_per_epoch:
            raise ValueError(
                f"--resume: the checkpoint is at batch {checkpoint['batch_in_epoch']} of an epoch, but this "
                f"run's data makes epochs of {self.steps_per_epoch} batches; resume with the run's own data"
            )
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.step = checkpoint["step"]
        self.epoch = checkpoint["epoch"]
        self.batch_in_epoch = checkpoint["batch_in_epoch"]
        self.best_metric = checkpoint["best_metric"]
        self.stale_evals = checkpoint["stale_evals"]
        self._interval_loss = list(checkpoint["interval_loss"])
        self._log_interval = (dict(checkpoint["log_interval"]["sums"]), checkpoint["log_interval"]["steps"])
        self.last_eval_step = checkpoint["last_eval_step"]
        self.metrics = dict(checkpoint["metrics"])
        states = checkpoint["rng"]
        if len(states) == self.ctx.world_size:
            set_rng_state(states[self.ctx.rank])
        else:
            # Resumed on another number of processes: no exact continuation exists anyway.
            seed_everything(self.config.seed + self.ctx.rank + self.step)

    # ------------------------------------------------------------------ signals

    def _catch_signals(self) -> dict[int, Any]:
        """Turn the first Ctrl-C / SIGTERM into a stop at the next step boundary (with a checkpoint);
        a second one interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}

        def request_stop(signum: int, frame: Any) -> None:
            self._stop_signal = signum
            signal.signal(signum, previous[signum])

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request_stop)
        return previous


def _optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


class _Progress:
    """A rich progress bar showing step, loss and sequences per second."""

    def __init__(self, total: int, completed: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} seq/s"),
            TimeRemainingColumn(),
        )
        self._task = self._bar.add_task("train", total=total, completed=completed, loss="-", speed="-")
        self._bar.start()

    def update(self, step: int, loss: float) -> None:
        self._bar.update(self._task, completed=step, loss=f"{loss:.4g}")

    def speed(self, seq_per_s: float) -> None:
        self._bar.update(self._task, speed=f"{seq_per_s:.0f}")

    def close(self) -> None:
        self._bar.stop()
