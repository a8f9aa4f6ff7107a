"""Golden values for rewind's ops where they follow PyTorch's wider rules, from PyTorch.

Writes tests/data/ops_golden.safetensors, read by tests/engine/ops_parity.rs. Every case is run twice,
in float64 and in float32 (its inputs drawn in float64 and rounded), and stored under the flat
keys "{dtype}.{case}.{what}" with dtype "f64" or "f32":

- `in.{k}`: the k-th input (a differentiable operand, the logits, the log-probabilities);
- `out.{k}`: the k-th output, `proj.{k}` a random tensor of its shape;
- `grad.{k}`: the gradient of L = sum_k sum(out_k * proj_k) with respect to input k;
- for the losses, `targets` (class indices, stored as floats) and `weight` (class weights);
  with class-probability targets the targets are input 1, differentiable as in PyTorch.

The cases:

- `matmul.*`: torch.matmul with 1-D operands, batch dimensions that broadcast, and operands
  read transposed (the test transposes them as stored; the script applies the same transpose);
- `broadcast_to.*`: Tensor.broadcast_to, repeating size-1 axes and adding leading ones, and
  Tensor.broadcast_to and Tensor.expand given -1 for an axis they keep;
- `index_select.*`: torch.index_select along every dimension, negative ones included;
- `axes.*`: every op that takes a dimension, given a negative one;
- `ce.*`: F.cross_entropy with class weights, ignore_index, label_smoothing and every reduction,
  on logits [N, C], unbatched logits [C] (one 0-d target) and K-dimensional logits
  [N, C, d1, d2] (targets [N, d1, d2]);
- `ce_probs.*`: F.cross_entropy with class-probability targets [N, C] (each row a softmax),
  with class weights, label_smoothing and every reduction (a mean divides by N, not by the
  weights), unbatched [C] and K-dimensional [N, C, d1, d2] too;
- `nll.*`: F.nll_loss with class weights, ignore_index and every reduction, on the same three
  layouts as `ce.*`.

A loss case's "shape" option is its input's shape, [N, C] = [7, 5] without it.

The metadata holds "generator" and "torch" and is written sorted, so that regenerating gives
identical bytes.

Run: python3 scripts/golden_ops.py   (needs torch and safetensors)
"""

import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from safetensors_metadata import sort_metadata

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
GOLDEN = DATA / "ops_golden.safetensors"
DTYPES = {"f64": torch.float64, "f32": torch.float32}


def seed(case):
    """Seed torch from the case name, so each case is reproducible on its own."""
    torch.manual_seed(zlib.crc32(case.encode()))


def randn(*shape):
    return torch.randn(shape, dtype=torch.float64)


# name -> (input shapes, function of the inputs returning one tensor or a tuple of them).
# A shape written [4, 3] under a "transposed" case is the shape as stored: the function
# transposes it, as the Rust test does with `t()` or `transpose(-1, -2)`.
T = lambda x: x.transpose(-1, -2)  # noqa: E731
MATMUL = {
    "matmul.dot": ([[4], [4]], torch.matmul),
    "matmul.mv": ([[3, 4], [4]], torch.matmul),
    "matmul.vm": ([[4], [4, 5]], torch.matmul),
    "matmul.v_batched": ([[4], [2, 4, 5]], torch.matmul),
    "matmul.batched_v": ([[2, 3, 4], [4]], torch.matmul),
    "matmul.v_nd": ([[4], [2, 1, 4, 5]], torch.matmul),
    "matmul.nd_v": ([[2, 1, 3, 4], [4]], torch.matmul),
    "matmul.broadcast": ([[2, 1, 3, 4], [5, 4, 6]], torch.matmul),
    "matmul.batch_of_one": ([[1, 3, 4], [5, 4, 6]], torch.matmul),
    "matmul.nd_2d": ([[2, 3, 3, 4], [4, 5]], torch.matmul),
    "matmul.2d_nd": ([[3, 4], [2, 2, 4, 5]], torch.matmul),
    "matmul.nd_nd": ([[2, 3, 3, 4], [2, 3, 4, 5]], torch.matmul),
    "matmul.nd_broadcast_both": ([[3, 1, 2, 3, 4], [2, 1, 4, 2]], torch.matmul),
    "matmul.transposed_v": ([[4, 3], [4]], lambda x, v: T(x) @ v),
    "matmul.batched_transposed_v": ([[2, 4, 3], [4]], lambda x, v: T(x) @ v),
    "matmul.v_transposed": ([[4], [5, 4]], lambda v, y: v @ T(y)),
    "matmul.broadcast_transposed": ([[2, 1, 4, 3], [5, 6, 4]], lambda x, y: T(x) @ T(y)),
}

BROADCAST_TO = {
    "broadcast_to.inner_and_leading": ([[3, 1, 4]], lambda x: x.broadcast_to(2, 3, 5, 4)),
    "broadcast_to.one_element": ([[1]], lambda x: x.broadcast_to(3, 2)),
    "broadcast_to.minus_one_keeps_axes": ([[3, 1, 4]], lambda x: x.broadcast_to(2, -1, 5, -1)),
    "broadcast_to.expand_minus_one": ([[1, 3]], lambda x: x.expand(4, 2, -1)),
    "broadcast_to.expand_minus_one_everywhere": ([[2, 1]], lambda x: x.expand(-1, -1)),
}

INDEX_SELECT = {
    "index_select.dim0": (0, [3, 0, 3]),
    "index_select.dim1": (1, [2, 2, 0, 1]),
    "index_select.dim2": (2, [1, 1, 0]),
    "index_select.dim_minus1": (-1, [0, 1, 1, 0]),
    "index_select.dim_minus2": (-2, [0, 2]),
    "index_select.dim_minus3": (-3, [1, 2, 1]),
}

X = [2, 3, 4]
AXES = {
    "axes.transpose": ([X], lambda x: x.transpose(-1, -3)),
    "axes.permute": ([X], lambda x: x.permute(-1, 0, -2)),
    "axes.sum_axis": ([X], lambda x: x.sum(-2)),
    "axes.sum_axis_keepdim": ([X], lambda x: x.sum(-1, keepdim=True)),
    "axes.mean_axis": ([X], lambda x: x.mean(-3)),
    "axes.max_axis": ([X], lambda x: x.max(-2, keepdim=True).values),
    "axes.softmax": ([X], lambda x: torch.softmax(x, -2)),
    "axes.log_softmax": ([X], lambda x: torch.log_softmax(x, -1)),
    "axes.narrow": ([X], lambda x: x.narrow(-1, 1, 2)),
    "axes.chunk": ([X], lambda x: x.chunk(2, -1)),
    "axes.split": ([X], lambda x: x.split(2, -2)),
    "axes.concat": ([X, [2, 1, 4]], lambda x, y: torch.cat([x, y], -2)),
    "axes.stack_last": ([X, X], lambda x, y: torch.stack([x, y], -1)),
    "axes.stack_first": ([X, X], lambda x, y: torch.stack([x, y], -4)),
    "axes.stack_middle": ([X, X], lambda x, y: torch.stack([x, y], -2)),
    "axes.unsqueeze_last": ([X], lambda x: x.unsqueeze(-1)),
    "axes.unsqueeze_first": ([X], lambda x: x.unsqueeze(-4)),
    "axes.unsqueeze_middle": ([X], lambda x: x.unsqueeze(-3)),
    "axes.squeeze": ([[2, 1, 4]], lambda x: x.squeeze(-2)),
}

N, C = 7, 5
IGNORED = [1, 4]  # rows whose target is the ignore index in the "ignore" cases
UNBATCHED = (C,)
KDIM = (3, C, 2, 4)  # targets [3, 2, 4]; IGNORED and the fixed targets index them flattened
# name -> options of F.cross_entropy / F.nll_loss; "ignore_index" also sets IGNORED's targets.
CROSS_ENTROPY = {
    "ce.weight_mean": dict(weight=True),
    "ce.weight_sum": dict(weight=True, reduction="sum"),
    "ce.weight_none": dict(weight=True, reduction="none"),
    "ce.none": dict(reduction="none"),
    "ce.sum": dict(reduction="sum"),
    "ce.ignore_weight_mean": dict(weight=True, ignore_index=-100),
    "ce.ignore_custom_weight_mean": dict(weight=True, ignore_index=2),
    "ce.smoothing": dict(label_smoothing=0.1),
    "ce.smoothing_weight_mean": dict(weight=True, label_smoothing=0.25),
    "ce.smoothing_weight_ignore_mean": dict(weight=True, ignore_index=-100, label_smoothing=0.2),
    "ce.smoothing_weight_ignore_sum": dict(weight=True, ignore_index=-100, label_smoothing=0.2,
                                           reduction="sum"),
    "ce.smoothing_weight_ignore_none": dict(weight=True, ignore_index=3, label_smoothing=0.2,
                                            reduction="none"),
    "ce.smoothing_ignore_none": dict(ignore_index=1, label_smoothing=0.3, reduction="none"),
    "ce.full_smoothing_weight": dict(weight=True, label_smoothing=1.0),
    "ce.unbatched_weight_mean": dict(shape=UNBATCHED, weight=True),
    "ce.unbatched_smoothing_weight_none": dict(shape=UNBATCHED, weight=True, label_smoothing=0.2,
                                               reduction="none"),
    "ce.kdim_smoothing_weight_ignore_mean": dict(shape=KDIM, weight=True, ignore_index=-100,
                                                 label_smoothing=0.2),
    "ce.kdim_sum": dict(shape=KDIM, reduction="sum"),
    "ce.kdim_weight_ignore_none": dict(shape=KDIM, weight=True, ignore_index=3, reduction="none"),
}
# name -> options of F.cross_entropy with class-probability targets.
CROSS_ENTROPY_PROBS = {
    "ce_probs.mean": dict(),
    "ce_probs.sum": dict(reduction="sum"),
    "ce_probs.none": dict(reduction="none"),
    "ce_probs.weight_mean": dict(weight=True),
    "ce_probs.weight_sum": dict(weight=True, reduction="sum"),
    "ce_probs.weight_none": dict(weight=True, reduction="none"),
    "ce_probs.smoothing": dict(label_smoothing=0.1),
    "ce_probs.smoothing_weight_mean": dict(weight=True, label_smoothing=0.25),
    "ce_probs.smoothing_weight_none": dict(weight=True, label_smoothing=0.2, reduction="none"),
    "ce_probs.heavy_smoothing_weight_sum": dict(weight=True, label_smoothing=0.9, reduction="sum"),
    "ce_probs.unbatched_smoothing_weight_mean": dict(shape=UNBATCHED, weight=True,
                                                     label_smoothing=0.25),
    "ce_probs.unbatched_none": dict(shape=UNBATCHED, reduction="none"),
    "ce_probs.kdim_smoothing_weight_mean": dict(shape=KDIM, weight=True, label_smoothing=0.1),
    "ce_probs.kdim_weight_none": dict(shape=KDIM, weight=True, reduction="none"),
}
NLL = {
    "nll.weight_mean": dict(weight=True),
    "nll.weight_sum": dict(weight=True, reduction="sum"),
    "nll.weight_none": dict(weight=True, reduction="none"),
    "nll.none": dict(reduction="none"),
    "nll.ignore_weight_mean": dict(weight=True, ignore_index=-100),
    "nll.ignore_custom_weight_sum": dict(weight=True, ignore_index=0, reduction="sum"),
    "nll.ignore_none": dict(ignore_index=-100, reduction="none"),
    "nll.unbatched_weight_mean": dict(shape=UNBATCHED, weight=True),
    "nll.unbatched_none": dict(shape=UNBATCHED, reduction="none"),
    "nll.kdim_weight_ignore_mean": dict(shape=KDIM, weight=True, ignore_index=-100),
    "nll.kdim_weight_ignore_none": dict(shape=KDIM, weight=True, ignore_index=3, reduction="none"),
    "nll.kdim_sum": dict(shape=KDIM, reduction="sum"),
}


def run(out, dtype, case, inputs, f, extra=None):
    """Run `f` on `inputs` (float64, cast to `dtype`) and store inputs, outputs, projections and
    the gradients of L = sum_k sum(out_k * proj_k)."""
    prefix = f"{dtype}.{case}"
    xs = [x.to(DTYPES[dtype]).requires_grad_() for x in inputs]
    outputs = f(*xs)
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)
    torch.manual_seed(zlib.crc32(f"{case}.proj".encode()))
    projs = [randn(*o.shape).to(DTYPES[dtype]) for o in outputs]
    loss = sum((o * p).sum() for o, p in zip(outputs, projs))
    grads = torch.autograd.grad(loss, xs)
    for k, (x, g) in enumerate(zip(xs, grads)):
        out[f"{prefix}.in.{k}"] = x
        out[f"{prefix}.grad.{k}"] = g
    for k, (o, p) in enumerate(zip(outputs, projs)):
        out[f"{prefix}.out.{k}"] = o
        out[f"{prefix}.proj.{k}"] = p
    for key, t in (extra or {}).items():
        out[f"{prefix}.{key}"] = t.to(DTYPES[dtype])


def class_dim(shape):
    """The class axis of an input [C], [N, C] or [N, C, d1, ...]."""
    return 0 if len(shape) == 1 else 1


def class_targets(case, ignore_index, shape):
    """Class indices in 0..C of the given shape ([N], [] unbatched, [N, d1, ...]); flattened,
    IGNORED's entries hold the ignore index when one is given."""
    seed(f"{case}.targets")
    targets = torch.randint(0, C, shape)
    if targets.dim() > 0:
        flat = targets.view(-1)
        flat[0] = 2  # so that a custom ignore index of 2 (or any of 0..3) has rows to skip
        flat[3] = 0
        flat[5] = 3
        flat[6] = 1
        if ignore_index is not None:
            flat[IGNORED] = ignore_index
    return targets


def loss_case(out, dtype, case, options, nll):
    options = dict(options)
    shape = options.pop("shape", (N, C))
    seed(case)
    x = randn(*shape) * 2
    if nll:
        x = torch.log_softmax(x, class_dim(shape))
    ignore_index = options.get("ignore_index")
    target_shape = tuple(d for k, d in enumerate(shape) if k != class_dim(shape))
    targets = class_targets(case, ignore_index, target_shape)
    extra = {"targets": targets.double()}
    if options.pop("weight", False):
        weight = torch.rand(C, dtype=torch.float64) + 0.5
        extra["weight"] = weight
        options["weight"] = weight.to(DTYPES[dtype])
    loss = F.nll_loss if nll else F.cross_entropy
    run(out, dtype, case, [x], lambda x: loss(x, targets, **options), extra)


def probs_case(out, dtype, case, options):
    """F.cross_entropy of logits against class probabilities of their shape: both are inputs."""
    options = dict(options)
    shape = options.pop("shape", (N, C))
    seed(case)
    x = randn(*shape) * 2
    target = torch.softmax(randn(*shape), class_dim(shape))
    extra = {}
    if options.pop("weight", False):
        weight = torch.rand(C, dtype=torch.float64) + 0.5
        extra["weight"] = weight
        options["weight"] = weight.to(DTYPES[dtype])
    run(out, dtype, case, [x, target], lambda x, t: F.cross_entropy(x, t, **options), extra)


def write_golden():
    out = {}
    for dtype in DTYPES:
        for case, (shapes, f) in {**MATMUL, **BROADCAST_TO, **AXES}.items():
            seed(case)
            run(out, dtype, case, [randn(*s) for s in shapes], f)
        for case, (dim, indices) in INDEX_SELECT.items():
            seed(case)
            index = torch.tensor(indices)
            run(out, dtype, case, [randn(4, 3, 2)], lambda x: torch.index_select(x, dim, index),
                {"indices": index.double()})
        for case, options in CROSS_ENTROPY.items():
            loss_case(out, dtype, case, options, nll=False)
        for case, options in CROSS_ENTROPY_PROBS.items():
            probs_case(out, dtype, case, options)
        for case, options in NLL.items():
            loss_case(out, dtype, case, options, nll=True)

    # Every gradient must carry information, or the parity test proves nothing.
    for key, t in out.items():
        if ".grad." in key:
            assert t.abs().sum() > 0, f"{key} is all zeros"

    tensors = {k: v.detach().contiguous().clone() for k, v in out.items()}
    metadata = {"generator": "scripts/golden_ops.py", "torch": torch.__version__}
    save_file(tensors, GOLDEN, metadata=metadata)
    sort_metadata(GOLDEN)
    print(f"{GOLDEN.relative_to(DATA.parent.parent)}: {len(tensors)} tensors, "
          f"{GOLDEN.stat().st_size} bytes")


if __name__ == "__main__":
    DATA.mkdir(parents=True, exist_ok=True)
    write_golden()
