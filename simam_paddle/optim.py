"""The optimizer, the learning-rate schedule and gradient clipping of a training run, built from the
config's ``train`` section (each key's meaning: ``simam_paddle.config``).

The schedule is a Paddle ``LRScheduler`` stepped after every iteration: iteration i (counted from 0
over the whole run) trains with ``lr_at(i)``:

- warmup (``warmup_epochs`` * iterations per epoch, or ``warmup_iters``; W iterations): lr * i / W for i < W;
- ``cosine`` (the recipe's): lr * (1 + cos(pi * (i - W) / (T - W))) / 2, T the run's iterations;
- ``step`` / ``multistep``: lr * gamma ** (the number of milestones m * iterations per epoch <= i), the
  milestones counted in epochs from the start of the run (``step``: every ``step_size`` epochs).

Without warmup the cosine is Paddle's ``CosineAnnealingDecay`` as the recipe ran it (its recursive
form, equal to the formula to float rounding); after a warmup Paddle's ``LinearWarmup`` evaluates it
in its closed form.
"""

from __future__ import annotations

import paddle

from .errors import ConfigError


def warmup_iterations(tc: dict, steps: int) -> int:
    """Iterations of linear warmup: ``warmup_iters``, or ``warmup_epochs`` epochs of ``steps`` iterations."""
    return tc["warmup_iters"] or tc["warmup_epochs"] * steps


def milestones(tc: dict, steps: int) -> list[int]:
    """The iterations (from the start of the run) after which ``step`` / ``multistep`` multiply by gamma."""
    if tc["schedule"] == "step":
        return [e * steps for e in range(tc["step_size"], tc["epochs"], tc["step_size"])]
    return [m * steps for m in tc["milestones"]]


def build_schedule(tc: dict, steps: int) -> paddle.optimizer.lr.LRScheduler:
    """The per-iteration schedule of a run of ``tc["epochs"]`` epochs of ``steps`` iterations."""
    total, warmup = tc["epochs"] * steps, warmup_iterations(tc, steps)
    if warmup >= total:
        raise ConfigError(f"train.warmup_iters={warmup} leaves no iteration of the run's {total} "
                          f"({tc['epochs']} epochs of {steps}) for the schedule; lower it below {total}")
    if tc["schedule"] == "cosine":
        main = paddle.optimizer.lr.CosineAnnealingDecay(tc["lr"], T_max=total - warmup)
    else:
        early = [m for m in milestones(tc, steps) if m <= warmup]
        if early:
            raise ConfigError(f"train.warmup_iters={warmup} reaches the schedule's first decay (iteration {early[0]}); "
                              "lower the warmup or move the decay later")
        # Paddle's LinearWarmup hands the schedule the iterations after the warmup: shift the milestones.
        main = paddle.optimizer.lr.MultiStepDecay(tc["lr"], [m - warmup for m in milestones(tc, steps)],
                                                  gamma=tc["gamma"])
    if not warmup:
        return main
    return paddle.optimizer.lr.LinearWarmup(main, warmup_steps=warmup, start_lr=0.0, end_lr=tc["lr"])


def build_optimizer(tc: dict, schedule, parameters) -> paddle.optimizer.Optimizer:
    """``train.optimizer`` with the schedule, weight decay (its meaning per optimizer: ``simam_paddle.config``)
    and gradient clipping by global norm (``train.clip_grad_norm``; null or 0 = none)."""
    clip = paddle.nn.ClipGradByGlobalNorm(tc["clip_grad_norm"]) if tc["clip_grad_norm"] else None
    common = {"learning_rate": schedule, "parameters": parameters, "weight_decay": tc["weight_decay"], "grad_clip": clip}
    if tc["optimizer"] == "adam":
        return paddle.optimizer.Adam(**common)
    if tc["optimizer"] == "adamw":
        return paddle.optimizer.AdamW(**common)
    return paddle.optimizer.Momentum(momentum=tc["momentum"], use_nesterov=tc["nesterov"], **common)
