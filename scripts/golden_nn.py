"""Golden values for rewind's neural-network layers, from PyTorch.

Writes three float32 files into tests/data/:

- nn_golden.safetensors, read by tests/nn/nn_parity.rs: for every case, flat keys
  "{case}.{what}" holding the inputs, parameters, outputs, random projections and the
  gradients of L = sum(output * proj) (+ the same for every other output) with respect to
  the parameters and inputs. Cases cover nn.RNN / nn.LSTM / nn.GRU stacks (layers,
  bidirectional, batch_first, initial states, packed variable lengths), the single cells,
  nn.Linear, nn.Embedding and four losses. The metadata holds "generator", "torch" and,
  per case, "case.{case}": a JSON description of its configuration.
- torch_lstm_state_dict.safetensors, read by tests/nn/nn_weights.rs: the state_dict of
  nn.LSTM(5, 4, num_layers=2, bidirectional=True) after torch.manual_seed(42), saved
  exactly as a PyTorch user would (no metadata).
- torch_lstm_expected.safetensors, read by tests/nn/nn_weights.rs: an `input` [6, 3, 5]
  (seed 43) and that model's `output`, `h_n`, `c_n` from a zero initial state.

Run: python3 scripts/golden_nn.py   (needs torch and safetensors)
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

torch.set_default_dtype(torch.float32)

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
GOLDEN = DATA / "nn_golden.safetensors"
STATE_DICT = DATA / "torch_lstm_state_dict.safetensors"
EXPECTED = DATA / "torch_lstm_expected.safetensors"

INPUT, HIDDEN, SEQ, BATCH = 5, 4, 6, 3
LENGTHS = [6, 3, 5]  # deliberately unsorted

# name -> options for recurrent_case
STACKS = {
    "rnn_tanh_l1": dict(kind="rnn"),
    "rnn_relu_l2": dict(kind="rnn", nonlinearity="relu", num_layers=2),
    "rnn_tanh_bi": dict(kind="rnn", bidirectional=True),
    "rnn_lengths": dict(kind="rnn", num_layers=2, bidirectional=True, has_lengths=True),
    "lstm_l1": dict(kind="lstm"),
    "lstm_l2_h0": dict(kind="lstm", num_layers=2, has_h0=True),
    "lstm_bi_l2": dict(kind="lstm", num_layers=2, bidirectional=True),
    "lstm_batch_first": dict(kind="lstm", batch_first=True),
    "lstm_lengths": dict(kind="lstm", num_layers=2, bidirectional=True, has_h0=True, has_lengths=True),
    "gru_l1": dict(kind="gru"),
    "gru_l2_bi": dict(kind="gru", num_layers=2, bidirectional=True, has_h0=True),
    "gru_lengths": dict(kind="gru", bidirectional=True, has_lengths=True),
}

CELLS = {
    "rnn_cell_tanh": ("rnn_cell", "tanh"),
    "rnn_cell_relu": ("rnn_cell", "relu"),
    "lstm_cell": ("lstm_cell", "tanh"),
    "gru_cell": ("gru_cell", "tanh"),
}


def seed(case):
    """Seed torch from the case name, so each case is reproducible on its own."""
    torch.manual_seed(zlib.crc32(case.encode()))


def saved(t):
    """A detached, contiguous float32 copy, safe to hand to save_file."""
    return t.detach().to(torch.float32).contiguous().clone()


def projected_loss(outputs, projections):
    """L = sum over pairs of sum(output * projection)."""
    return sum((o * p).sum() for o, p in zip(outputs, projections))


def record(out, case, named):
    """Store every tensor of `named` under "{case}.{key}"."""
    for key, t in named.items():
        out[f"{case}.{key}"] = saved(t)


def make_stack(kind, nonlinearity, num_layers, bidirectional, batch_first):
    opts = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, dropout=0.0)
    if kind == "rnn":
        return nn.RNN(INPUT, HIDDEN, nonlinearity=nonlinearity, **opts)
    return {"lstm": nn.LSTM, "gru": nn.GRU}[kind](INPUT, HIDDEN, **opts)


def run_stack(module, x, state, lengths):
    """Run a recurrent stack, packing the input when lengths are given."""
    if lengths is None:
        return module(x, state)
    bf = module.batch_first
    packed = pack_padded_sequence(x, lengths, batch_first=bf, enforce_sorted=False)
    out, final = module(packed, state)
    out, _ = pad_packed_sequence(out, batch_first=bf, total_length=SEQ)
    return out, final


def recurrent_case(out, case, kind, nonlinearity="tanh", num_layers=1, bidirectional=False,
                   batch_first=False, has_h0=False, has_lengths=False):
    config = dict(kind=kind, nonlinearity=nonlinearity, input_size=INPUT, hidden_size=HIDDEN,
                  num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                  has_h0=has_h0, has_lengths=has_lengths, seq_len=SEQ, batch=BATCH)
    seed(case)
    module = make_stack(kind, nonlinearity, num_layers, bidirectional, batch_first)
    lstm = kind == "lstm"
    state_shape = ((2 if bidirectional else 1) * num_layers, BATCH, HIDDEN)

    x = torch.randn((BATCH, SEQ, INPUT) if batch_first else (SEQ, BATCH, INPUT), requires_grad=True)
    inputs = {"input": x}
    if has_h0:
        inputs["h0"] = torch.randn(state_shape, requires_grad=True)
        if lstm:
            inputs["c0"] = torch.randn(state_shape, requires_grad=True)
    state = None
    if has_h0:
        state = (inputs["h0"], inputs["c0"]) if lstm else inputs["h0"]
    lengths = LENGTHS if has_lengths else None

    output, final = run_stack(module, x, state, lengths)
    outputs = {"output": output}
    if lstm:
        outputs["h_n"], outputs["c_n"] = final
    else:
        outputs["h_n"] = final
    projections = {f"proj_{k}": torch.randn_like(v) for k, v in outputs.items()}
    loss = projected_loss(outputs.values(), projections.values())

    params = dict(module.named_parameters())
    assert list(params) == list(module.state_dict())
    grads = torch.autograd.grad(loss, [*params.values(), *inputs.values()])

    record(out, case, inputs)
    if has_lengths:
        out[f"{case}.lengths"] = torch.tensor(LENGTHS, dtype=torch.float32)
    record(out, case, {f"param.{k}": v for k, v in module.state_dict().items()})
    record(out, case, outputs)
    record(out, case, projections)
    record(out, case, {f"grad.{k}": g for k, g in zip(params, grads)})
    record(out, case, {f"grad_{k}": g for k, g in zip(inputs, grads[len(params):])})
    return config


def cell_case(out, case, kind, nonlinearity):
    config = dict(kind=kind, nonlinearity=nonlinearity, input_size=INPUT, hidden_size=HIDDEN, batch=BATCH)
    seed(case)
    if kind == "rnn_cell":
        cell = nn.RNNCell(INPUT, HIDDEN, nonlinearity=nonlinearity)
    else:
        cell = {"lstm_cell": nn.LSTMCell, "gru_cell": nn.GRUCell}[kind](INPUT, HIDDEN)
    lstm = kind == "lstm_cell"

    inputs = {"x": torch.randn(BATCH, INPUT, requires_grad=True),
              "h": torch.randn(BATCH, HIDDEN, requires_grad=True)}
    if lstm:
        inputs["c"] = torch.randn(BATCH, HIDDEN, requires_grad=True)
        h_next, c_next = cell(inputs["x"], (inputs["h"], inputs["c"]))
        outputs = {"h_next": h_next, "c_next": c_next}
    else:
        outputs = {"h_next": cell(inputs["x"], inputs["h"])}
    projections = {f"proj_{k[0]}": torch.randn_like(v) for k, v in outputs.items()}
    loss = projected_loss(outputs.values(), projections.values())

    params = dict(cell.named_parameters())
    grads = torch.autograd.grad(loss, [*params.values(), *inputs.values()])

    record(out, case, inputs)
    record(out, case, {f"param.{k}": v for k, v in cell.state_dict().items()})
    record(out, case, outputs)
    record(out, case, projections)
    record(out, case, {f"grad.{k}": g for k, g in zip(params, grads)})
    record(out, case, {f"grad_{k}": g for k, g in zip(inputs, grads[len(params):])})
    return config


def linear_case(out, case="linear"):
    seed(case)
    layer = nn.Linear(5, 3)
    x = torch.randn(2, 4, 5, requires_grad=True)
    output = layer(x)
    proj = torch.randn_like(output)
    params = dict(layer.named_parameters())
    grads = torch.autograd.grad((output * proj).sum(), [*params.values(), x])
    record(out, case, {"input": x, "output": output, "proj_output": proj, "grad_input": grads[-1]})
    record(out, case, {f"param.{k}": v for k, v in params.items()})
    record(out, case, {f"grad.{k}": g for k, g in zip(params, grads)})
    return dict(kind="linear", in_features=5, out_features=3)


def embedding_case(out, case="embedding"):
    seed(case)
    layer = nn.Embedding(10, 4, padding_idx=0)
    indices = torch.tensor([[1, 0, 3, 3, 9], [0, 2, 5, 0, 7]])
    output = layer(indices)
    proj = torch.randn_like(output)
    (grad,) = torch.autograd.grad((output * proj).sum(), [layer.weight])
    record(out, case, {"indices": indices.float(), "param.weight": layer.weight, "output": output,
                       "proj_output": proj, "grad.weight": grad})
    return dict(kind="embedding", num_embeddings=10, embedding_dim=4, padding_idx=0)


def class_targets():
    """Six class indices in 0..5 with one ignored (-100) entry."""
    targets = torch.randint(0, 5, (6,))
    targets[2] = -100
    return targets


def loss_case(out, case):
    seed(case)
    if case == "cross_entropy":
        x = torch.randn(6, 5, requires_grad=True)
        targets = class_targets()
        loss = F.cross_entropy(x, targets)
        extra = {"targets": targets.float()}
    elif case == "nll":
        x = torch.log_softmax(torch.randn(6, 5), dim=1).requires_grad_()
        targets = class_targets()
        loss = F.nll_loss(x, targets)
        extra = {"targets": targets.float()}
    elif case == "mse":
        x = torch.randn(3, 4, requires_grad=True)
        target = torch.randn(3, 4)
        loss = F.mse_loss(x, target)
        extra = {"target": target}
    elif case == "bce_with_logits":
        x = (torch.randn(3, 4) * 3).requires_grad_()
        target = torch.rand(3, 4)
        loss = F.binary_cross_entropy_with_logits(x, target)
        extra = {"target": target}
    (grad,) = torch.autograd.grad(loss, [x])
    record(out, case, {"input": x, **extra, "loss": loss.reshape(1), "grad_input": grad})
    return dict(kind="loss")


def write_golden():
    tensors, configs = {}, {}
    for case, opts in STACKS.items():
        configs[case] = recurrent_case(tensors, case, **opts)
    for case, (kind, nonlinearity) in CELLS.items():
        configs[case] = cell_case(tensors, case, kind, nonlinearity)
    configs["linear"] = linear_case(tensors)
    configs["embedding"] = embedding_case(tensors)
    for case in ["cross_entropy", "nll", "mse", "bce_with_logits"]:
        configs[case] = loss_case(tensors, case)

    # Every gradient must carry information, or the parity test proves nothing.
    for key, t in tensors.items():
        if ".grad" in key:
            assert t.abs().sum() > 0, f"{key} is all zeros"

    metadata = {"generator": "scripts/golden_nn.py", "torch": torch.__version__}
    metadata.update({f"case.{c}": json.dumps(cfg, sort_keys=True) for c, cfg in configs.items()})
    save_file(tensors, GOLDEN, metadata=metadata)
    sort_metadata(GOLDEN)


def write_torch_lstm():
    torch.manual_seed(42)
    model = nn.LSTM(5, 4, num_layers=2, bidirectional=True)
    save_file(model.state_dict(), STATE_DICT)

    torch.manual_seed(43)
    x = torch.randn(SEQ, BATCH, INPUT)
    with torch.no_grad():
        output, (h_n, c_n) = model(x)
    expected = {"input": x, "output": output, "h_n": h_n, "c_n": c_n}
    save_file({k: saved(v) for k, v in expected.items()}, EXPECTED,
              metadata={"generator": "scripts/golden_nn.py", "torch": torch.__version__})
    sort_metadata(EXPECTED)


def self_check(case="lstm_lengths"):
    """Rebuild one LSTM case from the saved file alone and compare its forward pass."""
    saved_tensors = load_file(GOLDEN)
    opts = STACKS[case]
    module = make_stack("lstm", "tanh", opts["num_layers"], opts["bidirectional"], False)
    prefix = f"{case}.param."
    module.load_state_dict({k[len(prefix):]: v for k, v in saved_tensors.items() if k.startswith(prefix)})
    lengths = saved_tensors[f"{case}.lengths"].long().tolist()
    state = (saved_tensors[f"{case}.h0"], saved_tensors[f"{case}.c0"])
    with torch.no_grad():
        output, (h_n, c_n) = run_stack(module, saved_tensors[f"{case}.input"], state, lengths)
    for name, t in [("output", output), ("h_n", h_n), ("c_n", c_n)]:
        assert torch.equal(t, saved_tensors[f"{case}.{name}"]), f"{case}.{name} does not reproduce"

    model = nn.LSTM(5, 4, num_layers=2, bidirectional=True)
    model.load_state_dict(load_file(STATE_DICT))
    expected = load_file(EXPECTED)
    with torch.no_grad():
        assert torch.equal(model(expected["input"])[0], expected["output"])


def summary():
    paths = [GOLDEN, STATE_DICT, EXPECTED]
    for path in paths:
        n = len(load_file(path))
        print(f"{path.relative_to(DATA.parent.parent)}: {n} tensors, {path.stat().st_size} bytes")
    print(f"total: {sum(p.stat().st_size for p in paths)} bytes; self-check passed")


if __name__ == "__main__":
    DATA.mkdir(parents=True, exist_ok=True)
    write_golden()
    write_torch_lstm()
    self_check()
    summary()
