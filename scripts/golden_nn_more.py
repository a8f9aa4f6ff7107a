"""Golden values for rewind's bias-free layers, unbatched recurrent input, gradients built by
hand and loading without a generator, from PyTorch.

Writes two files into tests/data/, read by tests/nn/nn_more_parity.rs:

- nn_more_golden.safetensors: every case twice, under "f64.{case}.{what}" (float64) and
  "f32.{case}.{what}" (float32). A case's module and inputs are drawn in float64 (seeded from
  the case name) and, for float32, rounded to float32 before the run, which is then done in
  float32. Keys hold the inputs, the parameters ("param.{state_dict name}"), the outputs, random
  projections ("proj_{output}") and the gradients of L = sum(output * proj) (+ the same for every
  other output) with respect to the parameters ("grad.{name}") and inputs ("grad_{input}").
  Cases:
    - stacks (nn.RNN / nn.LSTM / nn.GRU) with bias=False, 1 and 2 layers, bidirectional, with an
      initial state or packed variable lengths;
    - stacks given an unbatched 2-D input [T, in] (and an unbatched initial state [D*L, H]),
      with and without bias, one of them batch_first (the input is still [T, in]);
    - the three cells with bias=False, and nn.Linear(5, 3, bias=False);
    - "adam": two steps of torch.optim.Adam(lr=0.01) on a bias-free 2-layer bidirectional LSTM,
      fed gradients by name ("grads0.{name}", "grads1.{name}"; the second omits
      weight_hh_l0_reverse, whose grad is None and which Adam leaves alone), with the parameters
      before ("param.{name}") and after each step ("after0.{name}", "after1.{name}");
    - "load": an input [6, 3, 5] and the outputs of the model in nn_more_state_dict.safetensors
      (its float32 weights, widened to float64 for the float64 run).
  The metadata holds "generator", "torch" and, per case, "case.{case}": a JSON description of
  its configuration.
- nn_more_state_dict.safetensors: the state_dict of
  nn.LSTM(5, 4, num_layers=2, bidirectional=True, bias=False) after torch.manual_seed(44),
  saved exactly as a PyTorch user would (float32, no metadata).

Run: python3 scripts/golden_nn_more.py   (needs torch and safetensors)
"""

import copy
import json
import zlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from safetensors_metadata import sort_metadata

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
GOLDEN = DATA / "nn_more_golden.safetensors"
STATE_DICT = DATA / "nn_more_state_dict.safetensors"

INPUT, HIDDEN, SEQ, BATCH = 5, 4, 6, 3
LENGTHS = [6, 3, 5]  # deliberately unsorted
DTYPES = {"f64": torch.float64, "f32": torch.float32}

# name -> options for stack_case
STACKS = {
    "rnn_nobias_l1": dict(kind="rnn", bias=False),
    "rnn_nobias_relu_l2_bi": dict(kind="rnn", bias=False, nonlinearity="relu", num_layers=2,
                                  bidirectional=True),
    "lstm_nobias_l1": dict(kind="lstm", bias=False),
    "lstm_nobias_l2_bi_h0": dict(kind="lstm", bias=False, num_layers=2, bidirectional=True,
                                 has_h0=True),
    "gru_nobias_l1": dict(kind="gru", bias=False),
    "gru_nobias_l2_bi_lengths": dict(kind="gru", bias=False, num_layers=2, bidirectional=True,
                                     has_lengths=True),
    "rnn_unbatched_l2_bi_h0": dict(kind="rnn", unbatched=True, num_layers=2, bidirectional=True,
                                   has_h0=True),
    "lstm_unbatched_l1": dict(kind="lstm", unbatched=True),
    "lstm_unbatched_nobias_l2_bi_h0": dict(kind="lstm", unbatched=True, bias=False, num_layers=2,
                                           bidirectional=True, has_h0=True),
    "gru_unbatched_batch_first_l2": dict(kind="gru", unbatched=True, batch_first=True,
                                         num_layers=2),
    "gru_unbatched_nobias_bi_h0": dict(kind="gru", unbatched=True, bias=False,
                                       bidirectional=True, has_h0=True),
}

CELLS = {
    "rnn_cell_nobias": "rnn_cell",
    "lstm_cell_nobias": "lstm_cell",
    "gru_cell_nobias": "gru_cell",
}


def seed(case):
    """Seed torch from the case name, so each case is reproducible on its own."""
    torch.manual_seed(zlib.crc32(case.encode()))


def saved(t, dtype):
    """A detached, contiguous copy in `dtype`, safe to hand to save_file."""
    return t.detach().to(dtype).contiguous().clone()


def projected_loss(outputs, projections):
    """L = sum over pairs of sum(output * projection)."""
    return sum((o * p).sum() for o, p in zip(outputs, projections))


class Recorder:
    """Stores tensors under "{dtype}.{case}.{key}" in the dtype of the run."""

    def __init__(self, tensors, prefix, dtype):
        self.tensors, self.prefix, self.dtype = tensors, prefix, dtype

    def __call__(self, case, named):
        for key, t in named.items():
            self.tensors[f"{self.prefix}.{case}.{key}"] = saved(t, self.dtype)


def make_stack(kind, nonlinearity, num_layers, bidirectional, batch_first, bias):
    opts = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                dropout=0.0, bias=bias, dtype=torch.float64)
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


def gradients(loss, params, inputs):
    """d loss / d every parameter and input, as two dicts keyed "grad.{name}", "grad_{name}"."""
    grads = torch.autograd.grad(loss, [*params.values(), *inputs.values()])
    by_param = {f"grad.{k}": g for k, g in zip(params, grads)}
    by_input = {f"grad_{k}": g for k, g in zip(inputs, grads[len(params):])}
    return {**by_param, **by_input}


def stack_case(record, dtype, case, kind, nonlinearity="tanh", num_layers=1, bidirectional=False,
               batch_first=False, bias=True, unbatched=False, has_h0=False, has_lengths=False):
    config = dict(kind=kind, nonlinearity=nonlinearity, input_size=INPUT, hidden_size=HIDDEN,
                  num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                  bias=bias, unbatched=unbatched, has_h0=has_h0, has_lengths=has_lengths,
                  seq_len=SEQ, batch=BATCH)
    seed(case)
    module = make_stack(kind, nonlinearity, num_layers, bidirectional, batch_first, bias)
    lstm = kind == "lstm"
    layers = (2 if bidirectional else 1) * num_layers
    state_shape = (layers, HIDDEN) if unbatched else (layers, BATCH, HIDDEN)
    if unbatched:
        x_shape = (SEQ, INPUT)
    else:
        x_shape = (BATCH, SEQ, INPUT) if batch_first else (SEQ, BATCH, INPUT)

    inputs = {"input": torch.randn(x_shape, dtype=torch.float64)}
    if has_h0:
        inputs["h0"] = torch.randn(state_shape, dtype=torch.float64)
        if lstm:
            inputs["c0"] = torch.randn(state_shape, dtype=torch.float64)

    module = module.to(dtype)
    inputs = {k: v.to(dtype).requires_grad_() for k, v in inputs.items()}
    state = None
    if has_h0:
        state = (inputs["h0"], inputs["c0"]) if lstm else inputs["h0"]
    output, final = run_stack(module, inputs["input"], state, LENGTHS if has_lengths else None)
    outputs = {"output": output}
    if lstm:
        outputs["h_n"], outputs["c_n"] = final
    else:
        outputs["h_n"] = final
    if unbatched:
        assert output.shape == (SEQ, layers // num_layers * HIDDEN)
        assert outputs["h_n"].shape == (layers, HIDDEN)
    torch.manual_seed(zlib.crc32(case.encode()) + 1)
    projections = {f"proj_{k}": torch.randn(v.shape, dtype=torch.float64).to(dtype)
                   for k, v in outputs.items()}
    loss = projected_loss(outputs.values(), projections.values())

    params = dict(module.named_parameters())
    assert list(params) == list(module.state_dict())
    if not bias:
        assert not any("bias" in name for name in params)

    record(case, inputs)
    if has_lengths:
        record(case, {"lengths": torch.tensor(LENGTHS)})
    record(case, {f"param.{k}": v for k, v in params.items()})
    record(case, outputs)
    record(case, projections)
    record(case, gradients(loss, params, inputs))
    return config


def cell_case(record, dtype, case, kind):
    config = dict(kind=kind, nonlinearity="tanh", input_size=INPUT, hidden_size=HIDDEN,
                  batch=BATCH, bias=False)
    seed(case)
    make = {"rnn_cell": nn.RNNCell, "lstm_cell": nn.LSTMCell, "gru_cell": nn.GRUCell}[kind]
    cell = make(INPUT, HIDDEN, bias=False, dtype=torch.float64)
    lstm = kind == "lstm_cell"
    inputs = {"x": torch.randn(BATCH, INPUT, dtype=torch.float64),
              "h": torch.randn(BATCH, HIDDEN, dtype=torch.float64)}
    if lstm:
        inputs["c"] = torch.randn(BATCH, HIDDEN, dtype=torch.float64)
    projections = {"proj_h": torch.randn(BATCH, HIDDEN, dtype=torch.float64)}
    if lstm:
        projections["proj_c"] = torch.randn(BATCH, HIDDEN, dtype=torch.float64)

    cell = cell.to(dtype)
    inputs = {k: v.to(dtype).requires_grad_() for k, v in inputs.items()}
    projections = {k: v.to(dtype) for k, v in projections.items()}
    if lstm:
        h_next, c_next = cell(inputs["x"], (inputs["h"], inputs["c"]))
        outputs = {"h_next": h_next, "c_next": c_next}
    else:
        outputs = {"h_next": cell(inputs["x"], inputs["h"])}
    loss = projected_loss(outputs.values(), projections.values())

    params = dict(cell.named_parameters())
    assert list(params) == ["weight_ih", "weight_hh"]
    record(case, inputs)
    record(case, {f"param.{k}": v for k, v in params.items()})
    record(case, outputs)
    record(case, projections)
    record(case, gradients(loss, params, inputs))
    return config


def linear_case(record, dtype, case="linear_nobias"):
    seed(case)
    layer = nn.Linear(5, 3, bias=False, dtype=torch.float64)
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    proj = torch.randn(2, 4, 3, dtype=torch.float64)

    layer = layer.to(dtype)
    inputs = {"input": x.to(dtype).requires_grad_()}
    proj = proj.to(dtype)
    output = layer(inputs["input"])
    params = dict(layer.named_parameters())
    assert list(params) == ["weight"]
    record(case, {**inputs, "output": output, "proj_output": proj})
    record(case, {f"param.{k}": v for k, v in params.items()})
    record(case, gradients((output * proj).sum(), params, inputs))
    return dict(kind="linear", in_features=5, out_features=3, bias=False)


def adam_case(record, dtype, case="adam"):
    """Adam applying gradients that came from elsewhere, given by state_dict name."""
    seed(case)
    model = nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, bias=False,
                    dtype=torch.float64)
    names = [n for n, _ in model.named_parameters()]
    fed = [{n: torch.randn_like(p) for n, p in model.named_parameters()} for _ in range(2)]
    del fed[1]["weight_hh_l0_reverse"]

    model = model.to(dtype)
    record(case, {f"param.{k}": v for k, v in model.named_parameters()})
    opt = torch.optim.Adam(model.parameters(), lr=0.01, foreach=False)
    for step, grads in enumerate(fed):
        opt.zero_grad(set_to_none=True)
        for name, p in model.named_parameters():
            if name in grads:
                p.grad = grads[name].to(dtype)
        opt.step()
        record(case, {f"grads{step}.{k}": v for k, v in grads.items()})
        record(case, {f"after{step}.{k}": v for k, v in model.named_parameters()})
    return dict(kind="adam", lr=0.01, steps=2, names=len(names))


def write_state_dict():
    """Saves the bias-free LSTM as a PyTorch user would; returns it and an input for it."""
    torch.manual_seed(44)
    model = nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, bias=False)
    save_file(model.state_dict(), STATE_DICT)
    torch.manual_seed(45)
    return model, torch.randn(SEQ, BATCH, INPUT)


def load_case(record, dtype, model, x):
    """The saved model's outputs on `x`, computed in `dtype`."""
    model, x = copy.deepcopy(model).to(dtype), x.to(dtype)
    with torch.no_grad():
        output, (h_n, c_n) = model(x)
    record("load", {"input": x, "output": output, "h_n": h_n, "c_n": c_n})


def write_golden():
    tensors, configs = {}, {}
    saved_model, saved_input = write_state_dict()
    for prefix, dtype in DTYPES.items():
        record = Recorder(tensors, prefix, dtype)
        for case, opts in STACKS.items():
            configs[case] = stack_case(record, dtype, case, **opts)
        for case, kind in CELLS.items():
            configs[case] = cell_case(record, dtype, case, kind)
        configs["linear_nobias"] = linear_case(record, dtype)
        configs["adam"] = adam_case(record, dtype)
        load_case(record, dtype, saved_model, saved_input)
    configs["load"] = dict(kind="lstm", input_size=INPUT, hidden_size=HIDDEN, num_layers=2,
                           bidirectional=True, bias=False)

    # Every gradient must carry information, or the parity test proves nothing.
    for key, t in tensors.items():
        if ".grad" in key:
            assert t.abs().sum() > 0, f"{key} is all zeros"

    metadata = {"generator": "scripts/golden_nn_more.py", "torch": torch.__version__}
    metadata.update({f"case.{c}": json.dumps(cfg, sort_keys=True) for c, cfg in configs.items()})
    save_file(tensors, GOLDEN, metadata=metadata)
    sort_metadata(GOLDEN)


def self_check():
    """Rebuild two cases from the saved files alone and compare their forward passes."""
    saved_tensors = load_file(GOLDEN)
    case = "lstm_unbatched_nobias_l2_bi_h0"
    module = make_stack("lstm", "tanh", 2, True, False, False)
    prefix = f"f64.{case}.param."
    module.load_state_dict({k[len(prefix):]: v for k, v in saved_tensors.items()
                            if k.startswith(prefix)})
    state = (saved_tensors[f"f64.{case}.h0"], saved_tensors[f"f64.{case}.c0"])
    with torch.no_grad():
        output, (h_n, c_n) = module(saved_tensors[f"f64.{case}.input"], state)
    for name, t in [("output", output), ("h_n", h_n), ("c_n", c_n)]:
        assert torch.equal(t, saved_tensors[f"f64.{case}.{name}"]), f"{case}.{name} does not reproduce"

    model = nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, bias=False)
    model.load_state_dict(load_file(STATE_DICT))
    with torch.no_grad():
        assert torch.equal(model(saved_tensors["f32.load.input"])[0], saved_tensors["f32.load.output"])


def summary():
    for path in [GOLDEN, STATE_DICT]:
        n = len(load_file(path))
        print(f"{path.relative_to(DATA.parent.parent)}: {n} tensors, {path.stat().st_size} bytes")
    print("self-check passed")


if __name__ == "__main__":
    DATA.mkdir(parents=True, exist_ok=True)
    write_golden()
    self_check()
    summary()
