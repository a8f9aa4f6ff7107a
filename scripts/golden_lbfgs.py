"""Golden values for L-BFGS, with and without the strong-Wolfe line search, from PyTorch.

Writes tests/data/lbfgs_golden.safetensors (float64), read by tests/optim/optim_more_parity.rs:

- `tanh.x` [8, 3], `tanh.y` [8, 4], `tanh.params.weight` [3, 4], `tanh.params.bias` [4]: a
  small regression, loss = mean((tanh(x @ weight + bias) - y)²), and its starting parameters;
- `rosenbrock.params.a` [1], `rosenbrock.params.b` [1]: the start of Rosenbrock's function,
  loss = (1 - a)² + 100 (b - a²)²;
- for every case in CASES, after each of its `step(closure)` calls: `<case>.loss` [calls] (what
  step returned: the loss before the call), `<case>.func_evals` and `<case>.n_iter` [calls] (the
  closure evaluations and iterations so far, torch's state entries of those names), and
  `<case>.<param>` [calls, ...] (the parameters). Each case's options are in the metadata as
  `config.<case>`.

Run: python3 scripts/golden_lbfgs.py   (needs torch and safetensors)
"""

import json
import pathlib

import torch
from safetensors.torch import save_file

from safetensors_metadata import sort_metadata

DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"
OUT = DATA / "lbfgs_golden.safetensors"

torch.set_default_dtype(torch.float64)
torch.manual_seed(30)
X = torch.randn(8, 3)
Y = torch.rand(8, 4) * 1.6 - 0.8
TANH_START = {"weight": torch.randn(3, 4) * 0.5, "bias": torch.randn(4) * 0.1}
ROSENBROCK_START = {"a": torch.tensor([-1.5]), "b": torch.tensor([2.0])}


def tanh_loss(p):
    return ((X @ p["weight"] + p["bias"]).tanh() - Y).pow(2).mean()


def rosenbrock_loss(p):
    return (1 - p["a"]).pow(2).sum() + 100 * (p["b"] - p["a"].pow(2)).pow(2).sum()


# name -> (problem, LBFGS options, step calls). With `maximize`, the closure returns -loss.
CASES = {
    "tanh_defaults": ("tanh", dict(), 3),
    "tanh_lr_history": ("tanh", dict(lr=0.5, history_size=3, max_iter=8), 4),
    "tanh_strong_wolfe": ("tanh", dict(line_search_fn="strong_wolfe", history_size=5, max_iter=10), 4),
    "tanh_strong_wolfe_maximize": ("tanh", dict(line_search_fn="strong_wolfe", maximize=True), 2),
    "rosenbrock_strong_wolfe": ("rosenbrock", dict(line_search_fn="strong_wolfe"), 5),
    "rosenbrock_strong_wolfe_max_eval": ("rosenbrock", dict(line_search_fn="strong_wolfe", max_iter=30, max_eval=12), 6),
}
PROBLEMS = {"tanh": (tanh_loss, TANH_START), "rosenbrock": (rosenbrock_loss, ROSENBROCK_START)}


def run(problem, opts, calls):
    loss_fn, start = PROBLEMS[problem]
    params = {k: torch.nn.Parameter(v.clone()) for k, v in start.items()}
    opt = torch.optim.LBFGS(list(params.values()), **opts)
    sign = -1.0 if opts.get("maximize") else 1.0

    def closure():
        opt.zero_grad()
        loss = sign * loss_fn(params)
        loss.backward()
        return loss

    losses, evals, iters = [], [], []
    trajectory = {k: [] for k in params}
    for _ in range(calls):
        losses.append(float(opt.step(closure).detach()))
        state = opt.state[next(iter(params.values()))]
        evals.append(state["func_evals"])
        iters.append(state["n_iter"])
        for k, p in params.items():
            trajectory[k].append(p.detach().clone())
    out = {
        "loss": torch.tensor(losses),
        "func_evals": torch.tensor(evals, dtype=torch.float64),
        "n_iter": torch.tensor(iters, dtype=torch.float64),
    }
    out.update({k: torch.stack(v) for k, v in trajectory.items()})
    return out


def main():
    out = {"tanh.x": X, "tanh.y": Y}
    out.update({f"tanh.params.{k}": v for k, v in TANH_START.items()})
    out.update({f"rosenbrock.params.{k}": v for k, v in ROSENBROCK_START.items()})
    metadata = {"generator": "scripts/golden_lbfgs.py", "torch": torch.__version__}
    for name, (problem, opts, calls) in CASES.items():
        out.update({f"{name}.{k}": v for k, v in run(problem, opts, calls).items()})
        metadata[f"config.{name}"] = json.dumps({"problem": problem, "calls": calls, **opts}, sort_keys=True)
    DATA.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(OUT), metadata=metadata)
    sort_metadata(OUT)
    print(f"wrote {len(out)} tensors to {OUT}")


if __name__ == "__main__":
    main()
