"""Golden values for WeightAverage (crates/optim/src/average.rs) from torch's AveragedModel.

A model of two parameters, `weight` [3, 4] and `bias` [4], is set to 30 random values in turn
(as 30 optimizer steps would set it), and after each an AveragedModel takes it in:

- `ema_<d>` (d = 0.9, 0.999, 0.3): `AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(d))`;
  0.3 makes the lerp's weight 0.7, torch's other branch of lerp;
- `equal`: `AveragedModel(model)`, the equal (SWA) average.

Writes tests/data/weight_average_golden.safetensors (float64) and
tests/data/weight_average_golden_f32.safetensors (the same run in float32):

- `steps.weight` [30, 3, 4], `steps.bias` [30, 4]: the model's values, one row per step;
- `<case>.weight` [30, 3, 4], `<case>.bias` [30, 4]: the average after each update.

Read by tests/optim/average_parity.rs.

Run: python3 scripts/golden_weight_average.py   (needs torch and safetensors)
"""

import pathlib

import torch
from safetensors.torch import save_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

STEPS = 30
DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"
CASES = {"ema_0.9": 0.9, "ema_0.999": 0.999, "ema_0.3": 0.3, "equal": None}


def run(dtype):
    torch.manual_seed(21)
    steps = {
        "weight": torch.randn(STEPS, 3, 4, dtype=torch.float64).to(dtype),
        "bias": torch.randn(STEPS, 4, dtype=torch.float64).to(dtype),
    }
    out = {f"steps.{k}": v.clone() for k, v in steps.items()}
    for case, decay in CASES.items():
        model = torch.nn.Module()
        model.weight = torch.nn.Parameter(steps["weight"][0].clone())
        model.bias = torch.nn.Parameter(steps["bias"][0].clone())
        if decay is None:
            average = AveragedModel(model)
        else:
            average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
        rows = {"weight": [], "bias": []}
        for t in range(STEPS):
            with torch.no_grad():
                model.weight.copy_(steps["weight"][t])
                model.bias.copy_(steps["bias"][t])
            average.update_parameters(model)
            for name in rows:
                rows[name].append(getattr(average.module, name).detach().clone())
        for name, r in rows.items():
            out[f"{case}.{name}"] = torch.stack(r)
    return {k: v.contiguous() for k, v in out.items()}


save_file(run(torch.float64), DATA / "weight_average_golden.safetensors")
save_file(run(torch.float32), DATA / "weight_average_golden_f32.safetensors")
