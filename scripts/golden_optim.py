"""Golden values for rewind-optim, from PyTorch.

Writes two files read by tests/optim/optim_parity.rs. tests/data/optim_golden.safetensors (float64):

- `params.weight` [3, 4], `params.bias` [4]: the starting parameters;
- `grads.weight` [100, 3, 4], `grads.bias` [100, 4]: the gradient fed at each of 100 steps;
- `<config>.weight` [100, 3, 4], `<config>.bias` [100, 4]: the parameters after each step, for
  every optimizer configuration in CONFIGS;
- `clip.*`: clip_grad_norm_ and clip_grad_value_ on the first gradients;
- `sched.<name>` [21]: the learning rate at scheduler steps 0..20 from a base of 0.1.

tests/data/optim_golden_f32.safetensors (float32) holds `params.*`, `grads.*` and `<config>.*`
again, with every tensor rounded to float32 before the run and the run done in float32: what a
user of torch's float32 optimizers gets, rounding included.

Every optimizer runs its single-tensor loop (foreach=False), the one PyTorch picks on the CPU.

Run: python3 scripts/golden_optim.py   (needs torch and safetensors)
"""

import pathlib

import torch
from safetensors.torch import save_file

torch.manual_seed(0)
STEPS = 100
SCHEDULE_STEPS = 20
DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"
OUT = DATA / "optim_golden.safetensors"
OUT_F32 = DATA / "optim_golden_f32.safetensors"

init = {"weight": torch.randn(3, 4, dtype=torch.float64), "bias": torch.randn(4, dtype=torch.float64)}
grads = {
    "weight": torch.randn(STEPS, 3, 4, dtype=torch.float64),
    "bias": torch.randn(STEPS, 4, dtype=torch.float64),
}

O = torch.optim
# name -> (constructor, options); "groups" puts the bias in a group with no weight decay.
CONFIGS = {
    "sgd": (O.SGD, dict(lr=0.1)),
    "sgd_momentum": (O.SGD, dict(lr=0.1, momentum=0.9)),
    "sgd_dampening": (O.SGD, dict(lr=0.1, momentum=0.9, dampening=0.3)),
    "sgd_nesterov": (O.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    "sgd_weight_decay": (O.SGD, dict(lr=0.1, momentum=0.5, weight_decay=0.1)),
    "adam_defaults": (O.Adam, dict()),
    "adam": (O.Adam, dict(lr=0.01)),
    "adam_beta2_0.9999": (O.Adam, dict(lr=0.01, betas=(0.9, 0.9999))),
    "adam_weight_decay": (O.Adam, dict(lr=0.01, weight_decay=0.1)),
    "adam_amsgrad": (O.Adam, dict(lr=0.01, amsgrad=True, betas=(0.8, 0.99), eps=1e-6)),
    "adamw_defaults": (O.AdamW, dict()),
    "adamw": (O.AdamW, dict(lr=0.01)),
    "adamw_amsgrad": (O.AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    "adamw_groups": (O.AdamW, dict(lr=0.01, weight_decay=0.1, groups=True)),
    "adagrad": (O.Adagrad, dict(lr=0.1)),
    "adagrad_options": (O.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5)),
    "rmsprop": (O.RMSprop, dict(lr=0.01)),
    "rmsprop_alpha_0.999": (O.RMSprop, dict(lr=0.01, alpha=0.999)),
    "rmsprop_momentum": (O.RMSprop, dict(lr=0.01, momentum=0.9, weight_decay=0.1)),
    "rmsprop_centered": (O.RMSprop, dict(lr=0.01, alpha=0.9, centered=True)),
    "rmsprop_centered_momentum": (O.RMSprop, dict(lr=0.01, centered=True, momentum=0.5, eps=1e-4)),
}


def trajectories(dtype):
    """`params.*`, `grads.*` and every configuration's trajectory, computed in `dtype`."""
    start = {k: v.to(dtype) for k, v in init.items()}
    fed = {k: v.to(dtype) for k, v in grads.items()}
    out = {f"params.{k}": v for k, v in start.items()}
    out.update({f"grads.{k}": v for k, v in fed.items()})
    for name, (ctor, opts) in CONFIGS.items():
        opts = dict(opts)
        params = {k: torch.nn.Parameter(v.clone()) for k, v in start.items()}
        if opts.pop("groups", False):
            groups = [{"params": [params["weight"]]}, {"params": [params["bias"]], "weight_decay": 0.0}]
        else:
            groups = [params["weight"], params["bias"]]
        opt = ctor(groups, foreach=False, **opts)
        trajectory = {k: [] for k in params}
        for t in range(STEPS):
            for k, p in params.items():
                p.grad = fed[k][t].clone()
            opt.step()
            for k, p in params.items():
                trajectory[k].append(p.detach().clone())
        for k, values in trajectory.items():
            out[f"{name}.{k}"] = torch.stack(values)
    return out


out = trajectories(torch.float64)
out_f32 = trajectories(torch.float32)

# Clipping on the first step's gradients: a norm above the limit, one below, and by value.
for label, max_norm in [("clip.norm_1", 1.0), ("clip.norm_100", 100.0)]:
    ps = [torch.nn.Parameter(v.clone()) for v in init.values()]
    for p, g in zip(ps, grads.values()):
        p.grad = g[0].clone()
    total = torch.nn.utils.clip_grad_norm_(ps, max_norm)
    out[f"{label}.total"] = total.reshape(1)
    out[f"{label}.weight"], out[f"{label}.bias"] = ps[0].grad, ps[1].grad
ps = [torch.nn.Parameter(v.clone()) for v in init.values()]
for p, g in zip(ps, grads.values()):
    p.grad = g[0].clone()
torch.nn.utils.clip_grad_value_(ps, 0.5)
out["clip.value_0.5.weight"], out["clip.value_0.5.bias"] = ps[0].grad, ps[1].grad

# Schedules from a base learning rate of 0.1: the rate before any step, then after each.
S = O.lr_scheduler


def lrs(make):
    opt = O.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make(opt)
    values = [opt.param_groups[0]["lr"]]
    for _ in range(SCHEDULE_STEPS):
        opt.step()
        sched.step()
        values.append(opt.param_groups[0]["lr"])
    return torch.tensor(values, dtype=torch.float64)


out["sched.step"] = lrs(lambda o: S.StepLR(o, step_size=3, gamma=0.5))
out["sched.exponential"] = lrs(lambda o: S.ExponentialLR(o, gamma=0.9))
out["sched.cosine"] = lrs(lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=0.001))
out["sched.linear"] = lrs(lambda o: S.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=8))
out["sched.warmup_cosine"] = lrs(
    lambda o: S.SequentialLR(
        o,
        [S.LinearLR(o, start_factor=1 / 5, end_factor=1.0, total_iters=4), S.CosineAnnealingLR(o, T_max=15)],
        milestones=[5],
    )
)

DATA.mkdir(parents=True, exist_ok=True)
metadata = {"generator": "scripts/golden_optim.py", "torch": torch.__version__}
for path, tensors in [(OUT, out), (OUT_F32, out_f32)]:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    print(f"wrote {len(tensors)} tensors to {path}")
