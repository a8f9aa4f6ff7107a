"""Golden values for rewind-optim's learning-rate schedules and gradient clipping, from PyTorch.

Writes tests/data/schedules_golden.safetensors, read by tests/optim/schedules_parity.rs and
tests/optim/clip_parity.rs:

- `sched.<case>` [n + 1] (float64): the learning rate before any scheduler step, then after each
  of n steps, for every case in SCHEDULES (from an optimizer whose lr is BASE_LR, except the
  one-cycle cases, which set their own);
- `sched.<case>` and `momentum.<case>` [n + 1] (float64): for every case in CYCLING, the rate
  and the momentum (SGD's `momentum`, which starts at 0.5, or Adam's beta1) likewise;
- `fractional.<case>.epochs` [n], `fractional.<case>.lr` [n] (float64): for every case in
  FRACTIONAL, the rate after CosineAnnealingWarmRestarts' `step(epoch)` with each epoch in turn;
- `plateau.<case>.metrics` [n], `plateau.<case>.lr` [n + 1] (float64): ReduceLROnPlateau fed a
  fixed metric sequence, one metric per step, for every case in PLATEAUS;
- `clip.<dtype>.grads.<name>`: three gradients (float64, and the same rounded to float32);
- `clip.<dtype>.<case>.total` [1] and `clip.<dtype>.<case>.<name>`: clip_grad_norm_'s returned
  norm and the clipped gradients for norm types 1, 2, 3.5, inf, 0 and -inf (CLIPS), and
  `clip.<dtype>.value.<name>` for clip_grad_value_(0.5), each computed by torch in that dtype;
- `clip.nonfinite_<inf|nan>.<case>.total` [1] and `.grad` [3] (float64): clip_grad_norm_ of
  each case with error_if_nonfinite=False on the single gradient [1, inf, -2] or [1, nan, -2];
- `clip.sparse.grads.<name>` and `clip.sparse.<p0|pneginf>.total` [1] and `.<name>` (float64):
  norm types 0 and -inf on gradients that hold zeros, one of them all zeros (SPARSE_GRADS).
  torch's total norm is the norm of the per-gradient norms, so the 0 "norm" counts the
  gradients with a nonzero element, not the elements, and -inf is the smallest |g|.

LambdaLR and MultiplicativeLR take the lambdas written in SCHEDULES, which
tests/optim/schedules_parity.rs writes again as closures.

Warm-up is torch's SequentialLR of LinearLR(1/w, 1, w - 1) and the schedule, with the milestone
at w (what rewind's `Warmup { steps: w, .. }` is). SequentialLR refuses ReduceLROnPlateau, so
`plateau.warmup_*` runs the LinearLR warm-up by hand, sets the rate back to the base at step w
(as SequentialLR does at a milestone) and only then creates the plateau scheduler: the metrics
reported during the warm-up are never seen by it.

Run: python3 scripts/golden_schedules.py   (needs torch and safetensors)
"""

import json
import math
import pathlib

import torch
from safetensors.torch import save_file

from safetensors_metadata import sort_metadata

DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"
OUT = DATA / "schedules_golden.safetensors"
BASE_LR = 0.1
WARMUP = 4

O = torch.optim
S = O.lr_scheduler


def optimizer(lr=BASE_LR):
    return O.SGD([torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))], lr=lr)


def lrs(make, steps, lr=BASE_LR):
    """The rate before any step, then after each of `steps` scheduler steps."""
    opt = optimizer(lr)
    sched = make(opt)
    values = [opt.param_groups[0]["lr"]]
    for _ in range(steps):
        opt.step()
        sched.step()
        values.append(opt.param_groups[0]["lr"])
    return torch.tensor(values, dtype=torch.float64)


def warmed(make):
    """`make` behind a WARMUP-step linear warm-up, as rewind's Warmup."""

    def both(o):
        warm = S.LinearLR(o, start_factor=1 / WARMUP, end_factor=1.0, total_iters=WARMUP - 1)
        return S.SequentialLR(o, [warm, make(o)], milestones=[WARMUP])

    return both


ONE_CYCLE_MAX = 0.5
ONE_CYCLE_START = ONE_CYCLE_MAX / 25  # the default div_factor: warm up to where the cycle starts

# name -> (scheduler constructor, steps, optimizer lr)
SCHEDULES = {
    "multistep": (lambda o: S.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.3), 14, BASE_LR),
    "multistep_defaults_from_0": (lambda o: S.MultiStepLR(o, milestones=[0, 4]), 8, BASE_LR),
    "onecycle_defaults": (
        lambda o: S.OneCycleLR(o, max_lr=ONE_CYCLE_MAX, total_steps=20, cycle_momentum=False),
        20,
        BASE_LR,
    ),
    "onecycle_linear_three_phase": (
        lambda o: S.OneCycleLR(
            o,
            max_lr=0.3,
            total_steps=25,
            pct_start=0.25,
            anneal_strategy="linear",
            div_factor=10.0,
            final_div_factor=100.0,
            three_phase=True,
            cycle_momentum=False,
        ),
        25,
        BASE_LR,
    ),
    "onecycle_cos_three_phase": (
        lambda o: S.OneCycleLR(o, max_lr=0.3, total_steps=17, three_phase=True, cycle_momentum=False),
        17,
        BASE_LR,
    ),
    "restarts_t0_3_mult_2": (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.001), 30, BASE_LR),
    "restarts_t0_4": (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=4), 13, BASE_LR),
    "warmup_multistep": (warmed(lambda o: S.MultiStepLR(o, milestones=[3, 6], gamma=0.5)), 14, BASE_LR),
    "warmup_onecycle": (
        warmed(lambda o: S.OneCycleLR(o, max_lr=ONE_CYCLE_MAX, total_steps=20, cycle_momentum=False)),
        WARMUP + 20,
        ONE_CYCLE_START,
    ),
    "warmup_restarts": (warmed(lambda o: S.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2)), 20, BASE_LR),
    "constant_defaults": (lambda o: S.ConstantLR(o), 8, BASE_LR),
    "constant_half_3": (lambda o: S.ConstantLR(o, factor=0.5, total_iters=3), 6, BASE_LR),
    "polynomial_defaults": (lambda o: S.PolynomialLR(o), 8, BASE_LR),
    "polynomial_6_power_2": (lambda o: S.PolynomialLR(o, total_iters=6, power=2.0), 9, BASE_LR),
    "polynomial_4_power_half": (lambda o: S.PolynomialLR(o, total_iters=4, power=0.5), 6, BASE_LR),
    "lambda_power": (lambda o: S.LambdaLR(o, lambda e: 0.95**e), 12, BASE_LR),
    "lambda_inverse": (lambda o: S.LambdaLR(o, lambda e: 1.0 / (e + 1)), 12, BASE_LR),
    "multiplicative": (lambda o: S.MultiplicativeLR(o, lambda e: 0.9 if e % 3 else 0.97), 15, BASE_LR),
    # Each schedule after the first starts at its milestone from its own step 0.
    "sequential_constant_exponential_step": (
        lambda o: S.SequentialLR(
            o,
            [S.ConstantLR(o, factor=0.5, total_iters=2), S.ExponentialLR(o, gamma=0.9), S.StepLR(o, 2, gamma=0.5)],
            milestones=[3, 7],
        ),
        14,
        BASE_LR,
    ),
    "sequential_linear_cosine": (
        lambda o: S.SequentialLR(
            o, [S.LinearLR(o, start_factor=0.25, total_iters=3), S.CosineAnnealingLR(o, T_max=6)], milestones=[4]
        ),
        12,
        BASE_LR,
    ),
    # ChainedScheduler steps every schedule each step, each multiplying the rate by its factor.
    "chained_constant_exponential": (
        lambda o: S.ChainedScheduler([S.ConstantLR(o, factor=0.1, total_iters=2), S.ExponentialLR(o, gamma=0.9)]),
        10,
        BASE_LR,
    ),
    "chained_step_linear_polynomial": (
        lambda o: S.ChainedScheduler(
            [
                S.StepLR(o, 3, gamma=0.5),
                S.LinearLR(o, start_factor=0.5, total_iters=4),
                S.PolynomialLR(o, total_iters=10, power=0.5),
            ]
        ),
        12,
        BASE_LR,
    ),
}

# Schedules that cycle the momentum: name -> (scheduler constructor, steps, optimizer). The
# optimizer is SGD (its `momentum` cycles) or Adam (its beta1 cycles), with lr BASE_LR.
CYCLING = {
    "cyclic_triangular": (lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=4), 20, "sgd"),
    "cyclic_triangular2": (
        lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=5, mode="triangular2"),
        30,
        "sgd",
    ),
    "cyclic_exp_range": (
        lambda o: S.CyclicLR(
            o,
            base_lr=0.001,
            max_lr=0.05,
            step_size_up=4,
            mode="exp_range",
            gamma=0.9,
            base_momentum=0.7,
            max_momentum=0.95,
        ),
        25,
        "adam",
    ),
    "cyclic_no_momentum": (
        lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=2, step_size_down=1, cycle_momentum=False),
        9,
        "sgd",
    ),
    "onecycle_momentum_defaults": (lambda o: S.OneCycleLR(o, max_lr=ONE_CYCLE_MAX, total_steps=20), 20, "sgd"),
    "onecycle_momentum_three_phase": (
        lambda o: S.OneCycleLR(
            o, max_lr=0.3, total_steps=17, three_phase=True, anneal_strategy="linear", base_momentum=0.8, max_momentum=0.9
        ),
        17,
        "adam",
    ),
}


def lrs_and_momenta(make, steps, kind):
    """As `lrs`, and the momentum (SGD's, or Adam's beta1) at the same points."""
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = O.SGD([param], lr=BASE_LR, momentum=0.5) if kind == "sgd" else O.Adam([param], lr=BASE_LR)
    sched = make(opt)

    def momentum():
        group = opt.param_groups[0]
        return group["momentum"] if kind == "sgd" else group["betas"][0]

    values, momenta = [opt.param_groups[0]["lr"]], [momentum()]
    for _ in range(steps):
        opt.step()
        sched.step()
        values.append(opt.param_groups[0]["lr"])
        momenta.append(momentum())
    return torch.tensor(values, dtype=torch.float64), torch.tensor(momenta, dtype=torch.float64)


# CosineAnnealingWarmRestarts stepped to fractional epochs (`sched.step(epoch)`, as its documentation
# does once per batch): name -> (options, epochs).
FRACTIONAL = {
    "restarts_t0_3_mult_2": (dict(T_0=3, T_mult=2, eta_min=0.001), [i * 0.3 for i in range(75)] + [3.0, 9.0, 21.0]),
    "restarts_t0_4": (dict(T_0=4), [i * 0.25 for i in range(40)] + [7.99, 8.0, 8.01]),
}


def fractional_lrs(opts, epochs):
    """The rate after `sched.step(epoch)` for each epoch in turn."""
    opt = optimizer()
    sched = S.CosineAnnealingWarmRestarts(opt, **opts)
    values = []
    for epoch in epochs:
        opt.step()
        sched.step(epoch)
        values.append(opt.param_groups[0]["lr"])
    return torch.tensor(values, dtype=torch.float64)


# name -> (ReduceLROnPlateau options, metrics, warm-up steps)
PLATEAUS = {
    # Defaults (patience 10, factor 0.1): a flat metric is cut at steps 12 and 23.
    "defaults": (dict(), [1.0] * 25, 0),
    # Relative threshold 1%: 0.695 after 0.7 is no improvement, 0.69 is.
    "min_rel": (
        dict(factor=0.5, patience=2, threshold=0.01),
        [1.0, 0.8, 0.7, 0.695, 0.69, 0.69, 0.70, 0.71, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6,
         0.6, 0.5, 0.45, 0.46, 0.47, 0.48, 0.3, 0.3, 0.31, 0.32],
        0,
    ),
    # Accuracy-like metric: absolute threshold, cooldown, a floor at min_lr, and a NaN (no improvement).
    "max_abs_cooldown_min_lr": (
        dict(mode="max", threshold_mode="abs", threshold=0.05, factor=0.2, patience=1, cooldown=2, min_lr=0.001),
        [0.1, 0.3, 0.32, 0.33, 0.3, 0.3, 0.3, 0.3, 0.36, 0.37, float("nan"), 0.38, 0.3, 0.3, 0.3, 0.3,
         0.3, 0.3, 0.3, 0.3, 0.3],
        0,
    ),
    # Maximise with a relative threshold.
    "max_rel": (
        dict(mode="max", factor=0.5, patience=1, threshold=0.1),
        [1.0, 1.05, 1.2, 1.25, 1.3, 1.5, 1.5, 1.6, 1.7, 1.9, 2.1, 2.0],
        0,
    ),
    # eps 1e-3: the cut from 1e-3 to 1e-4 changes the rate by less than eps, so it is skipped.
    "eps": (dict(patience=0, eps=1e-3), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 0),
    # Minimise with an absolute threshold, after a 4-step warm-up.
    "warmup_min_abs": (
        dict(threshold_mode="abs", threshold=0.1, factor=0.5, patience=1),
        [5.0, 4.0, 3.0, 2.0, 1.0, 0.95, 0.92, 0.5, 0.45, 0.44, 0.43, 0.3, 0.1, 0.05, 0.04, 0.03],
        WARMUP,
    ),
}


def plateau(opts, metrics, warmup):
    opt = optimizer()
    values = [BASE_LR]
    if warmup:
        warm = S.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1)
        values = [opt.param_groups[0]["lr"]]
        for _ in range(warmup - 1):
            opt.step()
            warm.step()
            values.append(opt.param_groups[0]["lr"])
        # Step `warmup`: the schedule after the warm-up starts from the base rate.
        opt.param_groups[0]["lr"] = BASE_LR
        values.append(BASE_LR)
    sched = S.ReduceLROnPlateau(opt, **opts)
    for m in metrics[warmup:]:
        opt.step()
        sched.step(m)
        values.append(opt.param_groups[0]["lr"])
    assert len(values) == len(metrics) + 1
    return torch.tensor(values, dtype=torch.float64)


# Clipping: name -> (norm_type, max_norm). Every max_norm but the loose one is below the norm.
CLIPS = {
    "p1": (1.0, 1.0),
    "p2": (2.0, 1.0),
    "p3_5": (3.5, 1.0),
    "pinf": (math.inf, 1.0),
    "p3_5_loose": (3.5, 100.0),
    "p0": (0.0, 1.0),
    "pneginf": (-math.inf, 0.01),
}
SPARSE_GRADS = {"a": [1.0, 0.0, 3.0], "b": [0.0, 0.0], "c": [0.5, -2.0]}
CLIP_VALUE = 0.5


def clip_cases(out, grads, dtype):
    label = {torch.float64: "f64", torch.float32: "f32"}[dtype]
    fed = {k: v.to(dtype) for k, v in grads.items()}
    out.update({f"clip.{label}.grads.{k}": v for k, v in fed.items()})

    def params():
        ps = {k: torch.nn.Parameter(torch.zeros_like(v)) for k, v in fed.items()}
        for k, p in ps.items():
            p.grad = fed[k].clone()
        return ps

    for case, (norm_type, max_norm) in CLIPS.items():
        ps = params()
        total = torch.nn.utils.clip_grad_norm_(list(ps.values()), max_norm, norm_type=norm_type, foreach=False)
        out[f"clip.{label}.{case}.total"] = total.reshape(1).to(dtype)
        out.update({f"clip.{label}.{case}.{k}": p.grad for k, p in ps.items()})
    ps = params()
    torch.nn.utils.clip_grad_value_(list(ps.values()), CLIP_VALUE, foreach=False)
    out.update({f"clip.{label}.value.{k}": p.grad for k, p in ps.items()})


def nonfinite_cases(out):
    for label, bad in [("inf", math.inf), ("nan", math.nan)]:
        for case, (norm_type, max_norm) in CLIPS.items():
            p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
            p.grad = torch.tensor([1.0, bad, -2.0], dtype=torch.float64)
            total = torch.nn.utils.clip_grad_norm_([p], max_norm, norm_type=norm_type, foreach=False)
            out[f"clip.nonfinite_{label}.{case}.total"] = total.reshape(1)
            out[f"clip.nonfinite_{label}.{case}.grad"] = p.grad


def sparse_cases(out):
    for k, g in SPARSE_GRADS.items():
        out[f"clip.sparse.grads.{k}"] = torch.tensor(g, dtype=torch.float64)
    for case in ("p0", "pneginf"):
        norm_type, max_norm = CLIPS[case]
        ps = {k: torch.nn.Parameter(torch.zeros(len(g), dtype=torch.float64))
              for k, g in SPARSE_GRADS.items()}
        for k, p in ps.items():
            p.grad = torch.tensor(SPARSE_GRADS[k], dtype=torch.float64)
        total = torch.nn.utils.clip_grad_norm_(list(ps.values()), max_norm, norm_type=norm_type, foreach=False)
        out[f"clip.sparse.{case}.total"] = total.reshape(1)
        out.update({f"clip.sparse.{case}.{k}": p.grad for k, p in ps.items()})


def main():
    out = {}
    for name, (make, steps, lr) in SCHEDULES.items():
        out[f"sched.{name}"] = lrs(make, steps, lr)
    for name, (make, steps, kind) in CYCLING.items():
        out[f"sched.{name}"], out[f"momentum.{name}"] = lrs_and_momenta(make, steps, kind)
    for name, (opts, epochs) in FRACTIONAL.items():
        out[f"fractional.{name}.epochs"] = torch.tensor(epochs, dtype=torch.float64)
        out[f"fractional.{name}.lr"] = fractional_lrs(opts, epochs)
    for name, (opts, metrics, warmup) in PLATEAUS.items():
        out[f"plateau.{name}.metrics"] = torch.tensor(metrics, dtype=torch.float64)
        out[f"plateau.{name}.lr"] = plateau(opts, metrics, warmup)

    torch.manual_seed(14)
    grads = {
        "weight": torch.randn(3, 4, dtype=torch.float64),
        "bias": torch.randn(4, dtype=torch.float64) * 0.1,
        "proj": torch.randn(2, 3, dtype=torch.float64) * 3.0,
    }
    clip_cases(out, grads, torch.float64)
    clip_cases(out, grads, torch.float32)
    nonfinite_cases(out)
    sparse_cases(out)

    DATA.mkdir(parents=True, exist_ok=True)
    metadata = {"generator": "scripts/golden_schedules.py", "torch": torch.__version__}
    metadata.update({f"plateau.{n}": json.dumps(o, sort_keys=True) for n, (o, _, _) in PLATEAUS.items()})
    metadata.update({f"fractional.{n}": json.dumps(o, sort_keys=True) for n, (o, _) in FRACTIONAL.items()})
    metadata.update({f"clip.{n}": f"norm_type {c[0]}, max_norm {c[1]}" for n, c in CLIPS.items()})
    save_file({k: v.contiguous() for k, v in out.items()}, str(OUT), metadata=metadata)
    sort_metadata(OUT)
    print(f"wrote {len(out)} tensors to {OUT}")


if __name__ == "__main__":
    main()
