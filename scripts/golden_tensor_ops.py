"""Golden values for arithmetic, comparisons and reductions on plain tensors, from PyTorch.

Writes tests/data/tensor_ops_golden.safetensors, read by tests/engine/ops_parity.rs. The inputs are
drawn in float64 from a fixed seed, with a NaN and a tie placed by hand, and stored as `a`
[3, 4], `b` [4] (broadcast along the rows), `c` [3, 1] and `d` [3, 5] (no ties); every result is stored as float64
(indices and masks as floats) under the name of what produced it:

- `a+b`, `a-b`, `a*b`, `a/b`, `a*c`, `2-a`, `2/a`, `-a`, `a+0.5`: the operators;
- `a>b`, `a>=b`, `a<b`, `a<=b`, `a==b`, `a!=b`, `a>0`: comparisons as 0/1 masks;
- `max`, `min`: over all elements (NaN-free rows only, `a[1:]`), and `max_nan`: with the NaN;
- `max.{d}.values`, `max.{d}.indices`, `min.{d}...`, `argmax.{d}`, `argmin.{d}` along d = 0, 1;
- `topk2.{d}.values`, `topk2.{d}.indices`: torch.topk(d, 2, dim=d) (PyTorch leaves the order of
  ties open, so `d` has none);
- `allclose`: torch.allclose of [a near b pairs] as 0/1, the pairs listed in the test.

Run: python3 scripts/golden_tensor_ops.py   (needs torch and safetensors)
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

from safetensors_metadata import sort_metadata

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "data" / "tensor_ops_golden.safetensors"

torch.manual_seed(30)
a = torch.randn(3, 4, dtype=torch.float64)
a[0, 2] = float("nan")
a[2, 3] = a[2, 1]  # a tie: the first index wins
b = torch.randn(4, dtype=torch.float64)
b[1] = a[1, 1]  # an equal element for == and !=
c = torch.randn(3, 1, dtype=torch.float64)
d = torch.randn(3, 5, dtype=torch.float64)  # for topk, whose order of ties PyTorch leaves open
clean = a[1:]

out = {"a": a, "b": b, "c": c, "d": d}
f = lambda t: t.to(torch.float64)  # noqa: E731
out.update({
    "a+b": a + b, "a-b": a - b, "a*b": a * b, "a/b": a / b, "a*c": a * c,
    "2-a": 2 - a, "2/a": 2 / a, "-a": -a, "a+0.5": a + 0.5,
    "a>b": f(a > b), "a>=b": f(a >= b), "a<b": f(a < b), "a<=b": f(a <= b),
    "a==b": f(a == b), "a!=b": f(a != b), "a>0": f(a > 0),
    "max": clean.max().reshape(1), "min": clean.min().reshape(1), "max_nan": a.max().reshape(1),
})
for dim in (0, 1):
    for name, fn in (("max", torch.max), ("min", torch.min)):
        v, i = fn(a, dim=dim)
        out[f"{name}.{dim}.values"], out[f"{name}.{dim}.indices"] = v, f(i)
    out[f"argmax.{dim}"] = f(torch.argmax(a, dim=dim))
    out[f"argmin.{dim}"] = f(torch.argmin(a, dim=dim))
    v, i = torch.topk(d, 2, dim=dim)
    out[f"topk2.{dim}.values"], out[f"topk2.{dim}.indices"] = v, f(i)
inf, nan = float("inf"), float("nan")
pairs = [
    (torch.tensor([1.0, 2.0]), torch.tensor([1.0 + 1e-6, 2.0])),
    (torch.tensor([1.0, 2.0]), torch.tensor([1.0 + 1e-4, 2.0])),
    (torch.tensor([0.0]), torch.tensor([1e-9])),
    (torch.tensor([inf, -inf]), torch.tensor([inf, -inf])),
    (torch.tensor([inf]), torch.tensor([-inf])),
    (torch.tensor([nan]), torch.tensor([nan])),
    (torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 1.0])),
]
out["allclose"] = torch.tensor([float(torch.allclose(x.double(), y.double())) for x, y in pairs])
save_file({k: v.contiguous() for k, v in out.items()}, GOLDEN,
          metadata={"generator": "scripts/golden_tensor_ops.py", "torch": torch.__version__})
sort_metadata(GOLDEN)
print(f"wrote {GOLDEN}")
