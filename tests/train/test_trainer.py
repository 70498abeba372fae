"""The Trainer on a small real model: metrics, checkpoints, determinism, resume, schedules, failures."""

from __future__ import annotations

import csv
import os
import signal

import pytest
import torch

from seqlvm.models.base import ELBO
from seqlvm.train import NonFiniteLossError, Trainer, load_checkpoint, load_model
from seqlvm.train.config import TrainConfig
from seqlvm.train.distributed import resolve_device
from tests.train.toy import ToyChains, make_toy


def fit(config, data, model=None, resume=False):
    train, valid = data
    model = model if model is not None else make_toy()
    result = Trainer(config, model, train, valid).fit(resume=resume)
    return model, result


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def params(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_fit_logs_every_term_and_writes_loadable_checkpoints(make_config, data):
    config = make_config(epochs=3)
    model, result = fit(config, data)
    assert result.reason == "completed" and result.step == 3 * 6 and result.epoch == 3

    rows = read_rows(config.run_dir / "metrics.csv")
    columns = set(rows[0])
    assert {"step", "epoch", "train/loss", "train/log_likelihood", "lr", "grad_norm",
            "kl_weight", "seq_per_s", "valid/loss", "valid/log_likelihood"} <= columns
    train_losses = [float(r["train/loss"]) for r in rows if r["train/loss"]]
    assert len(train_losses) == 18 and train_losses[-1] < train_losses[0]
    assert len([r for r in rows if r["valid/loss"]]) == 3

    for name in ("last.pt", "best.pt"):
        raw = torch.load(config.run_dir / "ckpt" / name, weights_only=True)
        assert raw["format_version"] == 1 and raw["model_name"] == "toy"
        assert {"optimizer", "scheduler", "rng", "step", "epoch", "train_config"} <= set(raw)
    assert not list((config.run_dir / "ckpt").glob(".*.tmp*"))
    loaded, checkpoint = load_model(config.run_dir)
    assert checkpoint["step"] == 18
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, model.state_dict()[name])
    assert TrainConfig.from_toml(config.run_dir / "config.toml") == config


def test_same_seed_same_parameters(make_config, data):
    a, _ = fit(make_config("a"), data)
    b, _ = fit(make_config("b"), data)
    for name, value in params(a).items():
        assert torch.equal(value, params(b)[name])


class InterruptAt(torch.utils.data.Dataset):
    """Sends this process SIGINT (a Ctrl-C) when item number ``at`` is read."""

    def __init__(self, data, at):
        self.data, self.at, self.reads = data, at, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return self.data[i]


@pytest.mark.parametrize("stop_after", [10, 6, 18], ids=["mid-epoch", "epoch-end", "last-step"])
def test_ctrl_c_saves_and_resume_is_bit_for_bit(make_config, data, stop_after):
    train, valid = data
    settings = dict(epochs=3, eval_every=4, log_every=3, lr_schedule="cosine", optimizer="adamw",
                    weight_decay=0.01)
    reference, _ = fit(make_config("whole", **settings), data)

    config = make_config("parts", **settings)
    # The signal arrives while batch `stop_after` (4 sequences each) is read; that step completes.
    _, first = fit(config, (InterruptAt(train, at=4 * (stop_after - 1) + 2), valid))
    assert first.reason == "interrupted" and first.step == stop_after
    assert load_checkpoint(config.run_dir / "ckpt" / "last.pt")["step"] == stop_after

    resumed, second = fit(config, data, model=make_toy(seed=123), resume=True)
    assert second.reason == "completed" and second.step == 18 and second.epoch == 3
    for name, value in params(reference).items():
        assert torch.equal(value, params(resumed)[name]), name

    whole = read_rows(make_config("whole").run_dir / "metrics.csv")
    parts = read_rows(config.run_dir / "metrics.csv")
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seq_per_s"} for r in rows]
    assert drop(parts) == drop(whole)
    for name in ("best.pt", "last.pt"):
        a = torch.load(make_config("whole").run_dir / "ckpt" / name, weights_only=True)
        b = torch.load(config.run_dir / "ckpt" / name, weights_only=True)
        assert (a["step"], a["epoch"], a["best_metric"]) == (b["step"], b["epoch"], b["best_metric"])


def test_refuses_to_overwrite_a_run(make_config, data):
    config = make_config(max_steps=2)
    fit(config, data)
    with pytest.raises(ValueError, match="already holds a run"):
        fit(config, data)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit(make_config("fresh"), data, resume=True)


def test_resume_refuses_another_batch_size_or_a_smaller_data_set(make_config, data):
    """The checkpoint's place in its epoch is counted in batches (this used to loop for ever)."""
    train, valid = data
    config = make_config(max_steps=5)  # batch 4 of 24 sequences: 6 batches an epoch, stopped at batch 5
    fit(config, data)
    with pytest.raises(ValueError, match="trained with batch_size = 4; got 8"):
        fit(config.with_overrides(["batch_size=8", "max_steps=10"]), data, resume=True)
    with pytest.raises(ValueError, match="at batch 5 of an epoch, but this run's data makes epochs of 3 batches"):
        fit(config.with_overrides(["max_steps=10"]), (torch.utils.data.Subset(train, range(12)), valid), resume=True)


class ExplodingToy(ToyChains):
    """Its log-likelihood term turns NaN on the fifth training step, and with it the loss (as in
    every real model, whose loss is built from its terms)."""

    calls = 0

    def elbo(self, x, mask=None, u=None):
        out = super().elbo(x, mask, u)
        self.calls += self.training
        if self.calls == 5:
            nan = float("nan")
            return ELBO(out.loss * nan, {**out.terms, "log_likelihood": out.terms["log_likelihood"] * nan})
        return out


def test_non_finite_term_stops_with_its_name_and_keeps_the_last_good_checkpoint(make_config, data):
    config = make_config(eval_every=3)
    torch.manual_seed(0)
    model = ExplodingToy(make_toy().config)
    with pytest.raises(NonFiniteLossError, match=r"step 5 .*'log_likelihood' is nan.*last good checkpoint"):
        fit(config, data, model=model)
    assert load_checkpoint(config.run_dir)["step"] == 3


def test_kl_weight_warms_up_and_validation_uses_the_full_kl(make_config, data):
    seen = []

    class Recording(ToyChains):
        def elbo(self, x, mask=None, u=None):
            seen.append((self.training, self.kl_weight))
            return super().elbo(x, mask, u)

    torch.manual_seed(0)
    model = Recording(make_toy().config)
    fit(make_config(epochs=1, kl_warmup_steps=4, kl_weight_start=0.2), data, model=model)
    train_weights = [w for training, w in seen if training]
    assert train_weights == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert all(w == 1.0 for training, w in seen if not training)


def test_freeze_holds_parameters_for_their_epochs(make_config, data):
    initial = params(make_toy())
    first, _ = fit(make_config("one", epochs=1, freeze={"transition": 1, "log_*": 2}), data)
    assert torch.equal(params(first)["transition"], initial["transition"])
    assert torch.equal(params(first)["log_q"], initial["log_q"])
    assert not torch.equal(params(first)["offset"], initial["offset"])

    second, _ = fit(make_config("two", epochs=2, freeze={"transition": 1, "log_*": 2}), data)
    assert not torch.equal(params(second)["transition"], initial["transition"])
    assert torch.equal(params(second)["log_r"], initial["log_r"])
    assert all(p.requires_grad for p in second.parameters())


def test_freeze_pattern_must_match(make_config, data):
    with pytest.raises(ValueError, match="matches no parameter"):
        fit(make_config(freeze={"encoder.*": 1}), data)


def test_gradient_clipping_bounds_the_update(make_config, data):
    model = make_toy()
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    fit(make_config(max_steps=1, optimizer="sgd", momentum=0.0, lr=1.0, grad_clip=0.01), data, model=model)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm() == pytest.approx(0.01, rel=1e-4)


def test_early_stopping_after_patience(make_config, data):
    # An SGD step of 1e-30 leaves float32 parameters unchanged: no evaluation ever improves.
    config = make_config(epochs=10, optimizer="sgd", lr=1e-30, early_stopping_patience=2)
    _, result = fit(config, data)
    assert result.reason == "early_stopping" and result.epoch == 3
    # Resuming a run that stopped early leaves it stopped (and its checkpoints untouched).
    before = load_checkpoint(config.run_dir / "ckpt" / "last.pt")["step"]
    _, again = fit(config, data, resume=True)
    assert again.reason == "early_stopping" and again.step == before
    assert load_checkpoint(config.run_dir / "ckpt" / "last.pt")["step"] == before


def test_batch_larger_than_data_is_refused_before_training(make_config, data):
    with pytest.raises(ValueError, match="batch_size: 64 is larger than the 24"):
        Trainer(make_config(batch_size=64), make_toy(), *data)


def test_float64_runs_and_checkpoints_in_float64(make_config, data):
    config = make_config(max_steps=2, dtype="float64")
    model, _ = fit(config, data)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    loaded, _ = load_model(config.run_dir)
    assert all(p.dtype == torch.float64 for p in loaded.parameters())


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto", local_rank=0) == torch.device("cuda", 0)
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_metrics_reach_tensorboard_when_it_is_installed(make_config, data, monkeypatch):
    scalars = []

    class Writer:
        def add_scalar(self, name, value, step):
            scalars.append((name, step))

        def close(self):
            scalars.append(("closed", -1))

    monkeypatch.setattr("seqlvm.train.metrics._summary_writer", lambda log_dir: Writer())
    fit(make_config(max_steps=2, tensorboard=True), data)
    assert ("train/loss", 1) in scalars and ("valid/loss", 2) in scalars and scalars[-1] == ("closed", -1)
