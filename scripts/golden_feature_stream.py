"""A stream of feature vectors trained as the BPTT driver trains it, in PyTorch.

Writes tests/data/feature_stream_golden.safetensors, read by tests/nn/bptt_driver.rs: an LSTM
(input 2, hidden 4) and a linear readout (4 -> 2), in float64, over a series of 27 rows cut into
3 lanes of 9 rows (lane b holds rows 9b .. 9b + 8), read time-major as the driver reads it
(x[t, b] = series[9b + t]). Two cases:

- `paired`: the target of row r is `targets[r]` (9 steps);
- `next`: the target of row r is `series[r + 1]` within the lane (8 steps).

Each case's loss is PyTorch's default `F.mse_loss(prediction, target)` (the mean over every
element), from a zero state, backpropagated through the whole lane. Stored per case:
`{case}.param.{name}` (the weights, by PyTorch's names under `lstm.` and `head.`), `series`,
`targets`, `{case}.loss`, and `{case}.grad.{name}`.

Run: python3 scripts/golden_feature_stream.py   (needs torch and safetensors)
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

from safetensors_metadata import sort_metadata

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "data" / "feature_stream_golden.safetensors"
LANES, ROWS, D, H, E = 3, 9, 2, 4, 2

torch.manual_seed(7)
series = torch.randn(LANES * ROWS, D, dtype=torch.float64)
targets = torch.randn(LANES * ROWS, E, dtype=torch.float64)


def time_major(rows, steps, shift=0):
    """Rows shift .. shift + steps of every lane, as [steps, lanes, width]."""
    return torch.stack([rows[b * ROWS + shift: b * ROWS + shift + steps] for b in range(LANES)], dim=1)


out = {"series": series, "targets": targets}
for case in ["paired", "next"]:
    torch.manual_seed(11)
    lstm = torch.nn.LSTM(D, H).double()
    head = torch.nn.Linear(H, E).double()
    if case == "paired":
        x, y = time_major(series, ROWS), time_major(targets, ROWS)
    else:
        x, y = time_major(series, ROWS - 1), time_major(series, ROWS - 1, shift=1)
    hidden, _ = lstm(x)
    loss = torch.nn.functional.mse_loss(head(hidden), y)
    loss.backward()
    named = [("lstm." + n, p) for n, p in lstm.named_parameters()]
    named += [("head." + n, p) for n, p in head.named_parameters()]
    for name, p in named:
        out[f"{case}.param.{name}"] = p.detach().clone()
        out[f"{case}.grad.{name}"] = p.grad.detach().clone()
    out[f"{case}.loss"] = loss.detach().reshape(())

save_file(
    {k: v.contiguous() for k, v in out.items()},
    GOLDEN,
    metadata={"generator": "scripts/golden_feature_stream.py", "torch": torch.__version__},
)
sort_metadata(GOLDEN)
print(f"wrote {GOLDEN}")
