"""Golden Hessian-vector and Gauss-Newton-vector products of recurrent taggers, from PyTorch.

Writes tests/data/hvp_golden.safetensors, read by tests/engine/second_order_parity.rs. Every case is a
tagger in float64: an nn.LSTM or nn.GRU (input 3, hidden 4, batch 2, T 5) whose output at each
step goes through an nn.Linear readout to 5 classes, and L = F.cross_entropy over the T*B steps
(mean over the targets that are not -100). With lengths, the input is packed with
pack_padded_sequence (unsorted lengths), the output padded back with zeros, and the steps past a
sequence's length have the target -100.

Keys, "{case}.{what}":
  input [T, B, 3], targets [T*B] and, with lengths, lengths [B] (as floats);
  param.{name}: the state_dict, by PyTorch's names ("rnn.weight_ih_l0", "head.bias", ...);
  v.{name}: a fixed random direction (standard normal) over every parameter;
  loss [1]: L;  grad.{name}: dL/dθ;
  hv.{name}: H v, from torch.autograd.grad(create_graph=True) and then the gradient of <g, v>;
  gv.{name}: G v = Jᵀ H_z J v, z the logits [T*B, 5], H_z the Hessian of L in z.
The metadata holds "generator", "torch" and, per case, "case.{case}": a JSON description of its
configuration. Before writing, every H v is checked against central differences of the gradient
along v, and every G v against Jᵀ H_z J v with J and H_z formed as matrices.

Run: python3 scripts/golden_hvp.py   (needs torch and safetensors)
"""

import json
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from safetensors_metadata import sort_metadata

torch.set_default_dtype(torch.float64)

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
GOLDEN = DATA / "hvp_golden.safetensors"

INPUT, HIDDEN, SEQ, BATCH, CLASSES = 3, 4, 5, 2, 5
LENGTHS = [3, 5]  # deliberately unsorted

# name -> options for tagger_case
CASES = {
    "lstm_l1": dict(kind="lstm"),
    "lstm_l2_bi": dict(kind="lstm", num_layers=2, bidirectional=True),
    "lstm_l2_bi_lengths": dict(kind="lstm", num_layers=2, bidirectional=True, has_lengths=True),
    "gru_l2_bi_lengths": dict(kind="gru", num_layers=2, bidirectional=True, has_lengths=True),
}


def seed(case):
    """Seed torch from the case name, so each case is reproducible on its own."""
    torch.manual_seed(zlib.crc32(case.encode()))


class Tagger(nn.Module):
    """A recurrent stack and a linear readout of its output at every step."""

    def __init__(self, kind, num_layers, bidirectional):
        super().__init__()
        stack = {"lstm": nn.LSTM, "gru": nn.GRU}[kind]
        self.rnn = stack(INPUT, HIDDEN, num_layers=num_layers, bidirectional=bidirectional)
        self.head = nn.Linear((2 if bidirectional else 1) * HIDDEN, CLASSES)

    def forward(self, x, lengths):
        """The logits [T*B, C]; zero recurrent output past each sequence's length."""
        if lengths is None:
            out, _ = self.rnn(x)
        else:
            packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
            out, _ = self.rnn(packed)
            out, _ = pad_packed_sequence(out, total_length=SEQ)
        return self.head(out).reshape(SEQ * BATCH, CLASSES)


def targets_for(lengths):
    """A random class for every step, -100 past each sequence's length; [T*B], step-major."""
    targets = torch.randint(0, CLASSES, (SEQ, BATCH))
    if lengths is not None:
        for b, n in enumerate(lengths):
            targets[n:, b] = -100
    return targets.reshape(-1)


def inner(xs, ys):
    return sum((x * y).sum() for x, y in zip(xs, ys))


def hessian_vector(loss, params, v):
    """H v by double backward: the gradient recorded, then the gradient of <g, v>."""
    g = torch.autograd.grad(loss, params, create_graph=True)
    return torch.autograd.grad(inner(g, v), params)


def gauss_newton_vector(model, x, lengths, targets, params, v):
    """G v = Jᵀ H_z J v, J = dz/dθ for the logits z, in three passes: J v by the double-vjp trick
    (Jᵀ u recorded for a dummy u, then differentiated in u along v), H_z (J v) by double
    backward through the loss alone, and Jᵀ (H_z J v) by one more vector-Jacobian product."""
    z = model(x, lengths)
    u = torch.zeros_like(z, requires_grad=True)
    jt_u = torch.autograd.grad(z, params, grad_outputs=u, create_graph=True)
    (jv,) = torch.autograd.grad(inner(jt_u, v), u)
    zl = z.detach().requires_grad_()
    (dz,) = torch.autograd.grad(F.cross_entropy(zl, targets), zl, create_graph=True)
    (hjv,) = torch.autograd.grad(dz, zl, grad_outputs=jv)
    return torch.autograd.grad(z, params, grad_outputs=hjv)


def explicit_gauss_newton_vector(model, x, lengths, targets, params, v):
    """G v from the matrices themselves: J row by row, and H_z = (diag(p) - p pᵀ) / N for each of
    the N rows whose target counts (zero for an ignored row), p the row's softmax."""
    z = model(x, lengths)
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(z.reshape(-1)[k], params,
                                                                    retain_graph=True)])
            for k in range(z.numel())]
    jac = torch.stack(rows)
    counted = targets != -100
    p = torch.softmax(z.detach(), dim=1)
    h_rows = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) * counted[:, None, None]
    h_z = torch.block_diag(*h_rows) / counted.sum()
    gv = jac.T @ (h_z @ (jac @ torch.cat([d.reshape(-1) for d in v])))
    return torch.split(gv, [p.numel() for p in params])


def check_hv(model, x, lengths, targets, params, v, hv, eps=1e-5):
    """H v against (∇L(θ + εv) - ∇L(θ - εv)) / 2ε, to what central differences can resolve."""
    def grad_at(shift):
        with torch.no_grad():
            for p, d in zip(params, v):
                p.add_(shift * d)
        g = torch.autograd.grad(F.cross_entropy(model(x, lengths), targets), params)
        with torch.no_grad():
            for p, d in zip(params, v):
                p.sub_(shift * d)
        return g

    plus, minus = grad_at(eps), grad_at(-eps)
    for a, b, h in zip(plus, minus, hv):
        numerical = (a - b) / (2 * eps)
        err = (numerical - h).abs().max() / hv_scale(hv)
        assert err < 1e-6, f"H v disagrees with central differences by {err:.1e}"


def check_gv(model, x, lengths, targets, params, v, gv, hv):
    """G v against the explicit matrices; and G, unlike H here, is positive semi-definite."""
    explicit = explicit_gauss_newton_vector(model, x, lengths, targets, params, v)
    err = max((a - b.reshape(a.shape)).abs().max() for a, b in zip(gv, explicit)) / hv_scale(gv)
    assert err < 1e-12, f"G v disagrees with Jᵀ H_z J v formed explicitly by {err:.1e}"
    assert inner(gv, v) >= 0, "vᵀ G v < 0"
    assert any((g - h).abs().max() > 1e-3 for g, h in zip(gv, hv)), "G v equals H v"


def hv_scale(hv):
    return max(h.abs().max() for h in hv)


def tagger_case(out, case, kind, num_layers=1, bidirectional=False, has_lengths=False):
    config = dict(kind=kind, input_size=INPUT, hidden_size=HIDDEN, num_layers=num_layers,
                  bidirectional=bidirectional, has_lengths=has_lengths, seq_len=SEQ, batch=BATCH,
                  classes=CLASSES)
    seed(case)
    model = Tagger(kind, num_layers, bidirectional)
    x = torch.randn(SEQ, BATCH, INPUT)
    lengths = LENGTHS if has_lengths else None
    targets = targets_for(lengths)
    named = dict(model.named_parameters())
    assert list(named) == list(model.state_dict())
    params = list(named.values())
    v = [torch.randn_like(p) for p in params]

    loss = F.cross_entropy(model(x, lengths), targets)
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    hv = hessian_vector(loss, params, v)
    gv = gauss_newton_vector(model, x, lengths, targets, params, v)
    check_hv(model, x, lengths, targets, params, v, hv)
    check_gv(model, x, lengths, targets, params, v, gv, hv)

    def record(what, t):
        out[f"{case}.{what}"] = t.detach().to(torch.float64).contiguous().clone()

    record("input", x)
    record("targets", targets)
    if has_lengths:
        record("lengths", torch.tensor(LENGTHS))
    record("loss", loss.reshape(1))
    for name, p, d, g, h, n in zip(named, params, v, grads, hv, gv):
        record(f"param.{name}", p)
        record(f"v.{name}", d)
        record(f"grad.{name}", g)
        record(f"hv.{name}", h)
        record(f"gv.{name}", n)
    return config


def write_golden():
    tensors, configs = {}, {}
    for case, opts in CASES.items():
        configs[case] = tagger_case(tensors, case, **opts)
    # Every product must carry information, or the parity test proves nothing.
    for key, t in tensors.items():
        if any(f".{what}." in key for what in ["grad", "hv", "gv"]):
            assert t.abs().sum() > 0, f"{key} is all zeros"
    metadata = {"generator": "scripts/golden_hvp.py", "torch": torch.__version__}
    metadata.update({f"case.{c}": json.dumps(cfg, sort_keys=True) for c, cfg in configs.items()})
    save_file(tensors, GOLDEN, metadata=metadata)
    sort_metadata(GOLDEN)


def self_check(case="gru_l2_bi_lengths"):
    """Rebuild one case from the saved file alone and reproduce its loss and H v."""
    saved = load_file(GOLDEN)
    opts = CASES[case]
    model = Tagger(opts["kind"], opts["num_layers"], opts["bidirectional"])
    prefix = f"{case}.param."
    model.load_state_dict({k[len(prefix):]: t for k, t in saved.items() if k.startswith(prefix)})
    lengths = saved[f"{case}.lengths"].long().tolist()
    targets = saved[f"{case}.targets"].long()
    params = list(model.parameters())
    v = [saved[f"{case}.v.{name}"] for name, _ in model.named_parameters()]
    loss = F.cross_entropy(model(saved[f"{case}.input"], lengths), targets)
    assert torch.equal(loss.reshape(1), saved[f"{case}.loss"]), "the loss does not reproduce"
    for (name, _), h in zip(model.named_parameters(), hessian_vector(loss, params, v)):
        assert torch.equal(h, saved[f"{case}.hv.{name}"]), f"hv.{name} does not reproduce"


def summary():
    n = len(load_file(GOLDEN))
    print(f"{GOLDEN.relative_to(DATA.parent.parent)}: {n} tensors, {GOLDEN.stat().st_size} bytes;"
          " self-check passed")


if __name__ == "__main__":
    DATA.mkdir(parents=True, exist_ok=True)
    write_golden()
    self_check()
    summary()
