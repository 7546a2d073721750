"""Optimizers, schedules and gradient clipping (simam_paddle.optim) against their update rules and
formulas written out here in NumPy / plain Python, and the per-iteration learning rate of short runs
as history.json records it."""

from __future__ import annotations

import json
import math

import numpy as np
import paddle
import pytest

from simam_paddle.config import load_config
from simam_paddle.errors import ConfigError
from simam_paddle.optim import build_optimizer, build_schedule

LR, WD = 0.05, 0.1


def train_section(*overrides: str) -> dict:
    return load_config(None, [f"train.{o}" for o in overrides])["train"]


# -- one model, a loss whose gradient NumPy writes down ---------------------------------------------
X = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
W0 = np.random.default_rng(2).normal(size=(3, 2)).astype(np.float32)


def gradient(w: np.ndarray) -> np.ndarray:
    """d/dw of 0.5 * sum((X @ w) ** 2)."""
    return X.T @ (X @ w)


def paddle_steps(tc: dict, steps: int, lr=LR) -> np.ndarray:
    w = paddle.create_parameter([3, 2], "float32", default_initializer=paddle.nn.initializer.Assign(W0))
    opt = build_optimizer(tc, lr, [w])
    for _ in range(steps):
        loss = 0.5 * (paddle.to_tensor(X) @ w).pow(2).sum()
        loss.backward()
        opt.step()
        opt.clear_grad()
    return w.numpy()


def adam(w, steps, decoupled, b1=0.9, b2=0.999, eps=1e-8):
    w, m, v = w.astype(np.float64), 0.0, 0.0
    for t in range(1, steps + 1):
        g = gradient(w)
        if decoupled:
            w = w - LR * WD * w  # AdamW: the decay does not pass through the moments
        else:
            g = g + WD * w  # Adam: L2 added to the gradient
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - LR * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return w


def momentum(w, steps, mu, nesterov, clip=None):
    w, vel = w.astype(np.float64), 0.0
    for _ in range(steps):
        g = gradient(w)
        if clip:
            g = g * clip / max(np.sqrt((g * g).sum()), clip)
        g = g + WD * w  # L2 added to the (clipped) gradient
        vel = mu * vel + g
        w = w - LR * (g + mu * vel if nesterov else vel)
    return w


@pytest.mark.parametrize("name, reference", [
    ("adam", lambda: adam(W0, 3, decoupled=False)),
    ("adamw", lambda: adam(W0, 3, decoupled=True)),
])
def test_adam_and_adamw_follow_their_update_rules(name, reference):
    got = paddle_steps(train_section(f"optimizer={name}", f"weight_decay={WD}"), 3)
    np.testing.assert_allclose(got, reference(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_follows_its_update_rule(nesterov):
    tc = train_section("optimizer=momentum", "momentum=0.8", f"nesterov={str(nesterov).lower()}", f"weight_decay={WD}")
    np.testing.assert_allclose(paddle_steps(tc, 3), momentum(W0, 3, 0.8, nesterov), rtol=1e-5, atol=1e-6)


def test_adam_and_adamw_differ_where_weight_decay_is_on():
    adam_w = paddle_steps(train_section("optimizer=adam", f"weight_decay={WD}"), 3)
    adamw_w = paddle_steps(train_section("optimizer=adamw", f"weight_decay={WD}"), 3)
    assert np.abs(adam_w - adamw_w).max() > 1e-4


def test_clipping_scales_the_gradient_to_the_global_norm():
    norm = np.sqrt((gradient(W0.astype(np.float64)) ** 2).sum())
    clip = norm / 4  # the first step is clipped
    tc = train_section("optimizer=momentum", f"weight_decay={WD}", f"clip_grad_norm={clip}")
    np.testing.assert_allclose(paddle_steps(tc, 2), momentum(W0, 2, 0.9, False, clip=clip), rtol=1e-5, atol=1e-6)
    unclipped = train_section("optimizer=momentum", f"weight_decay={WD}", f"clip_grad_norm={norm * 10}")
    np.testing.assert_allclose(paddle_steps(unclipped, 1), momentum(W0, 1, 0.9, False), rtol=1e-5, atol=1e-6)


# -- schedules --------------------------------------------------------------------------------------
def rates(tc: dict, steps: int) -> list[float]:
    schedule = build_schedule(tc, steps)
    out = []
    for _ in range(tc["epochs"] * steps):
        out.append(schedule())
        schedule.step()
    return out


def cosine(i, total, warmup=0):
    return LR * i / warmup if i < warmup else LR * (1 + math.cos(math.pi * (i - warmup) / (total - warmup))) / 2


@pytest.mark.parametrize("warmup", ["warmup_epochs=2", "warmup_iters=7", "warmup_iters=0"])
def test_cosine_with_warmup_is_the_formula(warmup):
    tc = train_section("epochs=6", f"lr={LR}", warmup)
    w = {"warmup_epochs=2": 8, "warmup_iters=7": 7, "warmup_iters=0": 0}[warmup]
    assert rates(tc, 4) == pytest.approx([cosine(i, 24, w) for i in range(24)], rel=1e-9, abs=1e-15)


def test_step_and_multistep_count_epochs_from_the_start_of_the_run():
    # step every 2 epochs of 3 iterations, warmup 4 iterations: 0, 1/4, 2/4, 3/4 of LR, then LR to iteration 5
    tc = train_section("epochs=7", f"lr={LR}", "schedule=step", "step_size=2", "gamma=0.5", "warmup_iters=4")
    expected = [LR * i / 4 if i < 4 else LR * 0.5 ** (i // 6) for i in range(21)]
    assert rates(tc, 3) == pytest.approx(expected, rel=1e-12)
    tc = train_section("epochs=6", f"lr={LR}", "schedule=multistep", "milestones=[2, 5]", "gamma=0.1", "warmup_epochs=1")
    expected = [LR * i / 3 if i < 3 else LR * 0.1 ** ((i >= 6) + (i >= 15)) for i in range(18)]
    assert rates(tc, 3) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("overrides, says", [
    (["warmup_epochs=1", "warmup_iters=3"], "set one of them to 0"),
    (["epochs=3", "warmup_epochs=3"], "train.warmup_epochs=3 leaves no epoch"),
    (["schedule=multistep", "milestones=[2, 2]"], "a list of increasing epochs"),
    (["schedule=multistep", "milestones=[2]", "warmup_epochs=2"], "reaches the schedule's first decay"),
    (["optimizer=sgd"], "one of adam, adamw, momentum"),
    (["device=tpu"], "cpu, gpu, gpu:N or auto"),
])
def test_impossible_schedules_and_names_are_config_errors(overrides, says):
    with pytest.raises(ConfigError, match=says.replace("[", r"\[")):
        train_section(*overrides)


def test_warmup_longer_than_the_run_is_named():
    with pytest.raises(ConfigError, match="train.warmup_iters=30 leaves no iteration of the run's 20"):
        build_schedule(train_section("epochs=4", "warmup_iters=30"), 5)


# -- a short run records the rates it used ------------------------------------------------------------
def test_a_short_run_records_the_formula_per_iteration_and_the_last_step_per_epoch(image_folder, tmp_path):
    from simam_paddle.train import train

    # image_folder: 20 training images, batch 4: 5 iterations per epoch
    config = load_config(None, [f"data.root={image_folder}", f"train.output_dir={tmp_path / 'run'}", "model.name=alexnet",
                                "data.batch_size=4", "data.num_workers=0", "train.epochs=3", f"train.lr={LR}",
                                "train.optimizer=momentum", "train.warmup_iters=3", "train.clip_grad_norm=1.0",
                                "train.loss_record_interval=1", "train.throughput_batches=0"])
    train(config)
    h = json.loads((tmp_path / "run" / "history.json").read_text())
    expected = [cosine(i, 15, 3) for i in range(15)]
    assert h["iter_loss"]["iter"] == list(range(15))
    assert h["iter_loss"]["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert h["epoch"]["lr"] == pytest.approx([expected[4], expected[9], expected[14]], rel=1e-9, abs=1e-15)
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"[Eval][Epoch 1/3] lr: {expected[4]:.6f}," in log
    assert f"[Train][Epoch 1/3][Iter 5/5] lr: {expected[4]:.6f}," in log
    assert "throughput model-only not measured (train.throughput_batches=0)" in log and "nan" not in log
