"""Golden values for Adamax, NAdam, RAdam, Adadelta, Rprop and ASGD, and for `maximize` in every
optimizer, from PyTorch.

Writes two files read by tests/optim/optim_more_parity.rs. tests/data/optim_more_golden.safetensors
(float64):

- `params.weight` [3, 4], `params.bias` [4]: the starting parameters;
- `grads.weight` [100, 3, 4], `grads.bias` [100, 4]: the gradient fed at each of 100 steps;
- `<config>.weight` [100, 3, 4], `<config>.bias` [100, 4]: the parameters after each step, for
  every optimizer configuration in CONFIGS (each one's options are in the metadata as
  `config.<config>`);
- `<config>.ax.weight` [100, 3, 4], `<config>.ax.bias` [100, 4]: for the ASGD configurations, the
  running average of the parameters after each step (state `ax`).

tests/data/optim_more_golden_f32.safetensors (float32) holds the same names, with every tensor
rounded to float32 before the run and the run done in float32: what a user of torch's float32
optimizers gets, rounding included.

Every optimizer runs its single-tensor loop (foreach=False), the one PyTorch picks on the CPU.
The float64 run sets torch's default dtype to float64, as a float64 user does: NAdam keeps its
running product of momentum coefficients, `mu_product`, in the default dtype, so without it a
float64 NAdam would round that product to float32 at every step.

Run: python3 scripts/golden_optim_more.py   (needs torch and safetensors)
"""

import json
import pathlib

import torch
from safetensors.torch import save_file

from safetensors_metadata import sort_metadata

torch.manual_seed(14)
STEPS = 100
DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"
OUT = DATA / "optim_more_golden.safetensors"
OUT_F32 = DATA / "optim_more_golden_f32.safetensors"

init = {"weight": torch.randn(3, 4, dtype=torch.float64), "bias": torch.randn(4, dtype=torch.float64)}
grads = {
    "weight": torch.randn(STEPS, 3, 4, dtype=torch.float64),
    "bias": torch.randn(STEPS, 4, dtype=torch.float64),
}

O = torch.optim
# name -> (constructor, options). `bias_group` puts the bias in a parameter group of its own with
# these options; the weight stays in the default group.
CONFIGS = {
    "adamax_defaults": (O.Adamax, dict()),
    "adamax": (O.Adamax, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    "adamax_groups": (O.Adamax, dict(lr=0.01, weight_decay=0.1, bias_group=dict(lr=0.005, weight_decay=0.0))),
    "nadam_defaults": (O.NAdam, dict()),
    "nadam": (O.NAdam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, momentum_decay=0.01)),
    "nadamw": (O.NAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    "nadam_groups": (O.NAdam, dict(lr=0.01, weight_decay=0.1, bias_group=dict(lr=0.005, weight_decay=0.0))),
    "radam_defaults": (O.RAdam, dict()),
    "radam": (O.RAdam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    "radamw": (O.RAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    "radam_groups": (O.RAdam, dict(lr=0.01, weight_decay=0.1, bias_group=dict(lr=0.005, weight_decay=0.0))),
    # maximize: each optimizer negates the gradient before its weight decay.
    "sgd_maximize": (O.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True)),
    "adam_maximize": (O.Adam, dict(lr=0.01, weight_decay=0.1, maximize=True)),
    "adamw_amsgrad_maximize": (O.AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True)),
    "adagrad_maximize": (O.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, maximize=True)),
    "rmsprop_maximize": (
        O.RMSprop,
        dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1, maximize=True),
    ),
    "adamax_maximize": (O.Adamax, dict(lr=0.01, weight_decay=0.1, maximize=True)),
    "nadam_maximize": (O.NAdam, dict(lr=0.01, weight_decay=0.1, maximize=True)),
    "nadamw_maximize": (O.NAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    "radam_maximize": (O.RAdam, dict(lr=0.01, weight_decay=0.1, maximize=True)),
    "adadelta_defaults": (O.Adadelta, dict()),
    "adadelta": (O.Adadelta, dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.1)),
    "adadelta_groups": (O.Adadelta, dict(weight_decay=0.1, bias_group=dict(lr=0.5, weight_decay=0.0))),
    "adadelta_maximize": (O.Adadelta, dict(lr=0.5, weight_decay=0.1, maximize=True)),
    # Rprop has no weight decay; its lr is each element's first step size.
    "rprop_defaults": (O.Rprop, dict()),
    "rprop": (O.Rprop, dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2))),
    "rprop_groups": (O.Rprop, dict(lr=0.01, bias_group=dict(lr=0.005))),
    "rprop_maximize": (O.Rprop, dict(lr=0.05, maximize=True)),
    # The default t0 (1e6) never starts averaging in 100 steps; t0 10 starts it at step 11.
    "asgd_defaults": (O.ASGD, dict()),
    "asgd": (O.ASGD, dict(lr=0.05, lambd=1e-3, alpha=0.5, t0=10.0, weight_decay=0.1)),
    "asgd_groups": (O.ASGD, dict(lr=0.05, t0=10.0, weight_decay=0.1, bias_group=dict(lr=0.025, weight_decay=0.0))),
    "asgd_maximize": (O.ASGD, dict(lr=0.05, t0=10.0, weight_decay=0.1, maximize=True)),
    # Per-group options: the bias group sets its own betas, eps, momentum or maximize.
    "sgd_group_options": (O.SGD, dict(lr=0.1, momentum=0.9, bias_group=dict(momentum=0.5, maximize=True))),
    "adam_group_options": (O.Adam, dict(lr=0.01, bias_group=dict(betas=(0.8, 0.99), eps=1e-6, maximize=True))),
    "adagrad_group_options": (O.Adagrad, dict(lr=0.1, bias_group=dict(eps=1e-3, maximize=True))),
    "rmsprop_group_options": (O.RMSprop, dict(lr=0.01, momentum=0.5, bias_group=dict(momentum=0.9, eps=1e-4))),
    "adamax_group_options": (O.Adamax, dict(lr=0.01, bias_group=dict(betas=(0.8, 0.99), eps=1e-6))),
    "nadam_group_options": (O.NAdam, dict(lr=0.01, bias_group=dict(betas=(0.85, 0.995), eps=1e-5))),
    "radam_group_options": (O.RAdam, dict(lr=0.01, bias_group=dict(betas=(0.8, 0.99), maximize=True))),
    "adadelta_group_options": (O.Adadelta, dict(bias_group=dict(eps=1e-4, maximize=True))),
    "rprop_group_options": (O.Rprop, dict(lr=0.01, bias_group=dict(maximize=True))),
    "asgd_group_options": (O.ASGD, dict(lr=0.05, t0=10.0, bias_group=dict(maximize=True))),
}


def trajectories(dtype):
    """`params.*`, `grads.*` and every configuration's trajectory, computed in `dtype`."""
    torch.set_default_dtype(dtype)
    start = {k: v.to(dtype) for k, v in init.items()}
    fed = {k: v.to(dtype) for k, v in grads.items()}
    out = {f"params.{k}": v for k, v in start.items()}
    out.update({f"grads.{k}": v for k, v in fed.items()})
    for name, (ctor, opts) in CONFIGS.items():
        opts = dict(opts)
        params = {k: torch.nn.Parameter(v.clone()) for k, v in start.items()}
        bias_group = opts.pop("bias_group", None)
        if bias_group is None:
            groups = [params["weight"], params["bias"]]
        else:
            groups = [{"params": [params["weight"]]}, {"params": [params["bias"]], **bias_group}]
        opt = ctor(groups, foreach=False, **opts)
        trajectory = {k: [] for k in params}
        averages = {k: [] for k in params}
        for t in range(STEPS):
            for k, p in params.items():
                p.grad = fed[k][t].clone()
            opt.step()
            for k, p in params.items():
                trajectory[k].append(p.detach().clone())
                if ctor is O.ASGD:
                    averages[k].append(opt.state[p]["ax"].clone())
        for k, values in trajectory.items():
            out[f"{name}.{k}"] = torch.stack(values)
        if ctor is O.ASGD:
            out.update({f"{name}.ax.{k}": torch.stack(v) for k, v in averages.items()})
    torch.set_default_dtype(torch.float32)
    return out


metadata = {"generator": "scripts/golden_optim_more.py", "torch": torch.__version__}
for name, (ctor, opts) in CONFIGS.items():
    metadata[f"config.{name}"] = json.dumps({"optimizer": ctor.__name__, **opts}, sort_keys=True)

DATA.mkdir(parents=True, exist_ok=True)
for path, dtype in [(OUT, torch.float64), (OUT_F32, torch.float32)]:
    tensors = trajectories(dtype)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    sort_metadata(path)
    print(f"wrote {len(tensors)} tensors to {path}")
