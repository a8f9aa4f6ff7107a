"""Golden values from PyTorch for the second round's leftovers: ReduceLROnPlateau's per-group
min_lr, and clip_grad_norm_ with a negative finite norm_type.

Writes tests/data/leftovers_golden.safetensors, read by tests/optim/schedules_parity.rs and
tests/optim/clip_parity.rs:

- `plateau_groups.<case>.metrics` [n] and `plateau_groups.<case>.lr` [n + 1, G] (float64): for
  every case in PLATEAU_GROUPS, ReduceLROnPlateau over an SGD with G parameter groups whose
  rates are BASE_LR times each of the case's `scales` (computed as float64 products, as rewind's
  `lr_scale` is), fed one metric per step; row 0 holds the rates before any step, row k those
  after step k, column g the rate of group g (torch's `param_groups` order: rewind's default
  group first, then its groups in the order added);
- `clip_negative.grads.<name>` (float64): three gradients, and `clip_negative.zero.grads.<name>`
  the same with the second all zeros;
- `clip_negative.<case>.total` [1] and `clip_negative.<case>.<name>`: clip_grad_norm_'s returned
  norm and the clipped gradients, in float64, for every case in CLIPS. torch takes the norm of
  the per-gradient norms, (Σ_g ‖g‖_p^p)^(1/p); for p < 0 a zero element makes |0|^p infinite,
  so its gradient's norm, and then the total, is 0.

Run: python3 scripts/golden_round2_leftovers.py   (needs torch and safetensors)
"""

import json
import pathlib

import torch
from safetensors.torch import save_file

from safetensors_metadata import sort_metadata

DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"
OUT = DATA / "leftovers_golden.safetensors"
BASE_LR = 0.1

# name -> (ReduceLROnPlateau options, each group's lr scale, metrics)
PLATEAU_GROUPS = {
    # A flat metric cuts at every step from step 2; the groups reach their floors at steps 5, 3
    # and 9.
    "min_lrs": (
        dict(factor=0.5, patience=0, min_lr=[0.01, 0.02, 0.001]),
        [1.0, 0.5, 2.0],
        [1.0] * 10,
    ),
    # One scalar min_lr floors every group, each at its own step (9 and 4).
    "scalar_min_lr": (
        dict(factor=0.5, patience=1, min_lr=0.02),
        [1.0, 0.25],
        [1.0, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8],
    ),
    # eps per group: the third group's cut (0.003 to 0.0015) changes it by 0.0015 ≤ eps, so it
    # never moves, while the first is cut until its cut is that small too (0.00625 from step 6)
    # and the second until its floor (0.03, at step 6).
    "eps_per_group": (
        dict(factor=0.5, patience=0, eps=0.004, min_lr=[0.0, 0.03, 0.0]),
        [1.0, 4.0, 0.03],
        [3.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
    ),
}

# name -> (norm_type, max_norm, with a zero gradient)
CLIPS = {
    "pm2": (-2.0, 0.005, False),
    "pm0_5": (-0.5, 1e-4, False),
    "pm1": (-1.0, 1.0, False),
    "pm3_5_loose": (-3.5, 100.0, False),
    "pm2_zero": (-2.0, 0.1, True),
}
# name -> (shape, scale) of the gradients, drawn from N(0, 1) in this order and scaled.
GRADS = {"weight": ((3, 4), 1.0), "bias": ((4,), 0.1), "proj": ((2, 3), 3.0)}
NAMES = list(GRADS)


def plateau_groups(opts, scales, metrics):
    groups = [
        {"params": [torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))], "lr": BASE_LR * s}
        for s in scales
    ]
    opt = torch.optim.SGD(groups, lr=BASE_LR)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **opts)
    rows = [[g["lr"] for g in opt.param_groups]]
    for m in metrics:
        opt.step()
        sched.step(m)
        rows.append([g["lr"] for g in opt.param_groups])
    return torch.tensor(rows, dtype=torch.float64)


def clip_cases(out, grads, zero_grads):
    for case, (norm_type, max_norm, zero) in CLIPS.items():
        source = zero_grads if zero else grads
        params = []
        for n in NAMES:
            p = torch.nn.Parameter(torch.zeros_like(source[n]))
            p.grad = source[n].clone()
            params.append(p)
        total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
        out[f"clip_negative.{case}.total"] = total.reshape(1)
        for n, p in zip(NAMES, params):
            out[f"clip_negative.{case}.{n}"] = p.grad


def main():
    out = {}
    for name, (opts, scales, metrics) in PLATEAU_GROUPS.items():
        out[f"plateau_groups.{name}.metrics"] = torch.tensor(metrics, dtype=torch.float64)
        out[f"plateau_groups.{name}.lr"] = plateau_groups(opts, scales, metrics)
    torch.manual_seed(30)
    grads = {n: torch.randn(*shape, dtype=torch.float64) * k for n, (shape, k) in GRADS.items()}
    zero_grads = dict(grads, bias=torch.zeros(4, dtype=torch.float64))
    for n in NAMES:
        out[f"clip_negative.grads.{n}"] = grads[n].clone()
        out[f"clip_negative.zero.grads.{n}"] = zero_grads[n].clone()
    clip_cases(out, grads, zero_grads)

    DATA.mkdir(parents=True, exist_ok=True)
    metadata = {"generator": "scripts/golden_round2_leftovers.py", "torch": torch.__version__}
    metadata.update(
        {
            f"case.plateau_groups.{n}": json.dumps(dict(o, scales=s), sort_keys=True)
            for n, (o, s, _) in PLATEAU_GROUPS.items()
        }
    )
    metadata.update(
        {f"case.clip_negative.{n}": f"norm_type {c[0]}, max_norm {c[1]}" for n, c in CLIPS.items()}
    )
    save_file({k: v.contiguous() for k, v in out.items()}, str(OUT), metadata=metadata)
    sort_metadata(OUT)
    print(f"wrote {len(out)} tensors to {OUT}")


if __name__ == "__main__":
    main()
