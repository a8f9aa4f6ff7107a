"""Golden values for rewind's LSTM with a projection (proj_size) and its cells on unbatched
input, from PyTorch.

Writes two files into tests/data/, read by tests/nn/nn_more_parity.rs:

- nn_round2_golden.safetensors: every case twice, under "f64.{case}.{what}" (float64) and
  "f32.{case}.{what}" (float32), stored as scripts/golden_nn_more.py stores its cases (whose
  helpers this script uses): the inputs, the parameters ("param.{state_dict name}"), the outputs,
  random projections ("proj_{output}") and the gradients of L = sum(output * proj) (+ the same
  for every other output) with respect to the parameters ("grad.{name}") and inputs
  ("grad_{input}"). Cases:
    - nn.LSTM(5, 4, proj_size=2 or 3): one layer; two layers bidirectional with an initial state
      (h0 [D*L, B, P], c0 [D*L, B, H]); bias-free, two layers bidirectional over packed variable
      lengths; an unbatched input [T, in] with an unbatched initial state, batch_first;
    - nn.RNNCell, nn.LSTMCell and nn.GRUCell(5, 4) stepped on unbatched input: x [5], h [4]
      (and c [4]), giving h' [4] (and c' [4]);
    - "load_proj": an input [6, 3, 5] and the outputs of the model in
      nn_round2_state_dict.safetensors (its float32 weights, widened to float64 for the float64
      run).
  The metadata holds "generator", "torch" and, per case, "case.{case}": a JSON description of
  its configuration.
- nn_round2_state_dict.safetensors: the state_dict of
  nn.LSTM(5, 4, num_layers=2, bidirectional=True, proj_size=3) after torch.manual_seed(46),
  saved exactly as a PyTorch user would (float32, no metadata).

Run: python3 scripts/golden_nn_round2.py   (needs torch and safetensors)
"""

import copy
import json
import zlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from golden_nn_more import (BATCH, DTYPES, HIDDEN, INPUT, LENGTHS, SEQ, Recorder, gradients,
                            projected_loss, run_stack, seed)
from safetensors_metadata import sort_metadata

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
GOLDEN = DATA / "nn_round2_golden.safetensors"
STATE_DICT = DATA / "nn_round2_state_dict.safetensors"

UNBATCHED_CELLS = {
    "rnn_cell_unbatched": "rnn_cell",
    "lstm_cell_unbatched": "lstm_cell",
    "gru_cell_unbatched": "gru_cell",
}

# name -> options for proj_case
PROJECTED = {
    "lstm_proj2_l1": dict(proj_size=2),
    "lstm_proj3_l2_bi_h0": dict(proj_size=3, num_layers=2, bidirectional=True, has_h0=True),
    "lstm_proj2_nobias_l2_bi_lengths": dict(proj_size=2, num_layers=2, bidirectional=True,
                                            bias=False, has_lengths=True),
    "lstm_proj3_unbatched_batch_first_h0": dict(proj_size=3, unbatched=True, batch_first=True,
                                                has_h0=True),
}


def proj_case(record, dtype, case, proj_size, num_layers=1, bidirectional=False,
              batch_first=False, bias=True, unbatched=False, has_h0=False, has_lengths=False):
    config = dict(kind="lstm", nonlinearity="tanh", input_size=INPUT, hidden_size=HIDDEN,
                  proj_size=proj_size, num_layers=num_layers, bidirectional=bidirectional,
                  batch_first=batch_first, bias=bias, unbatched=unbatched, has_h0=has_h0,
                  has_lengths=has_lengths, seq_len=SEQ, batch=BATCH)
    seed(case)
    module = nn.LSTM(INPUT, HIDDEN, num_layers=num_layers, bidirectional=bidirectional,
                     batch_first=batch_first, bias=bias, proj_size=proj_size,
                     dtype=torch.float64)
    d = 2 if bidirectional else 1
    batch = () if unbatched else (BATCH,)
    if unbatched:
        x_shape = (SEQ, INPUT)
    else:
        x_shape = (BATCH, SEQ, INPUT) if batch_first else (SEQ, BATCH, INPUT)

    inputs = {"input": torch.randn(x_shape, dtype=torch.float64)}
    if has_h0:
        inputs["h0"] = torch.randn((d * num_layers, *batch, proj_size), dtype=torch.float64)
        inputs["c0"] = torch.randn((d * num_layers, *batch, HIDDEN), dtype=torch.float64)

    module = module.to(dtype)
    inputs = {k: v.to(dtype).requires_grad_() for k, v in inputs.items()}
    state = (inputs["h0"], inputs["c0"]) if has_h0 else None
    output, (h_n, c_n) = run_stack(module, inputs["input"], state,
                                   LENGTHS if has_lengths else None)
    outputs = {"output": output, "h_n": h_n, "c_n": c_n}
    assert output.shape[-1] == d * proj_size
    assert h_n.shape == (d * num_layers, *batch, proj_size)
    assert c_n.shape == (d * num_layers, *batch, HIDDEN)
    torch.manual_seed(zlib.crc32(case.encode()) + 1)
    projections = {f"proj_{k}": torch.randn(v.shape, dtype=torch.float64).to(dtype)
                   for k, v in outputs.items()}
    loss = projected_loss(outputs.values(), projections.values())

    params = dict(module.named_parameters())
    assert list(params) == list(module.state_dict())
    assert params["weight_hr_l0"].shape == (proj_size, HIDDEN)
    assert params["weight_hh_l0"].shape == (4 * HIDDEN, proj_size)

    record(case, inputs)
    if has_lengths:
        record(case, {"lengths": torch.tensor(LENGTHS)})
    record(case, {f"param.{k}": v for k, v in params.items()})
    record(case, outputs)
    record(case, projections)
    record(case, gradients(loss, params, inputs))
    return config


def unbatched_cell_case(record, dtype, case, kind):
    config = dict(kind=kind, nonlinearity="tanh", input_size=INPUT, hidden_size=HIDDEN, bias=True,
                  unbatched=True)
    seed(case)
    make = {"rnn_cell": nn.RNNCell, "lstm_cell": nn.LSTMCell, "gru_cell": nn.GRUCell}[kind]
    cell = make(INPUT, HIDDEN, dtype=torch.float64)
    lstm = kind == "lstm_cell"
    inputs = {"x": torch.randn(INPUT, dtype=torch.float64),
              "h": torch.randn(HIDDEN, dtype=torch.float64)}
    if lstm:
        inputs["c"] = torch.randn(HIDDEN, dtype=torch.float64)
    projections = {"proj_h": torch.randn(HIDDEN, dtype=torch.float64)}
    if lstm:
        projections["proj_c"] = torch.randn(HIDDEN, dtype=torch.float64)

    cell = cell.to(dtype)
    inputs = {k: v.to(dtype).requires_grad_() for k, v in inputs.items()}
    projections = {k: v.to(dtype) for k, v in projections.items()}
    if lstm:
        h_next, c_next = cell(inputs["x"], (inputs["h"], inputs["c"]))
        outputs = {"h_next": h_next, "c_next": c_next}
    else:
        outputs = {"h_next": cell(inputs["x"], inputs["h"])}
    assert all(o.shape == (HIDDEN,) for o in outputs.values())
    loss = projected_loss(outputs.values(), projections.values())

    params = dict(cell.named_parameters())
    record(case, inputs)
    record(case, {f"param.{k}": v for k, v in params.items()})
    record(case, outputs)
    record(case, projections)
    record(case, gradients(loss, params, inputs))
    return config


def write_state_dict():
    """Saves a projected LSTM as a PyTorch user would; returns it and an input for it."""
    torch.manual_seed(46)
    model = nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, proj_size=3)
    save_file(model.state_dict(), STATE_DICT)
    torch.manual_seed(47)
    return model, torch.randn(SEQ, BATCH, INPUT)


def load_case(record, dtype, model, x):
    """The saved model's outputs on `x`, computed in `dtype`."""
    model, x = copy.deepcopy(model).to(dtype), x.to(dtype)
    with torch.no_grad():
        output, (h_n, c_n) = model(x)
    record("load_proj", {"input": x, "output": output, "h_n": h_n, "c_n": c_n})


def write_golden():
    tensors, configs = {}, {}
    saved_model, saved_input = write_state_dict()
    for prefix, dtype in DTYPES.items():
        record = Recorder(tensors, prefix, dtype)
        for case, opts in PROJECTED.items():
            configs[case] = proj_case(record, dtype, case, **opts)
        for case, kind in UNBATCHED_CELLS.items():
            configs[case] = unbatched_cell_case(record, dtype, case, kind)
        load_case(record, dtype, saved_model, saved_input)
    configs["load_proj"] = dict(kind="lstm", input_size=INPUT, hidden_size=HIDDEN, proj_size=3,
                                num_layers=2, bidirectional=True, bias=True)

    # Every gradient must carry information, or the parity test proves nothing.
    for key, t in tensors.items():
        if ".grad" in key:
            assert t.abs().sum() > 0, f"{key} is all zeros"

    metadata = {"generator": "scripts/golden_nn_round2.py", "torch": torch.__version__}
    metadata.update({f"case.{c}": json.dumps(cfg, sort_keys=True) for c, cfg in configs.items()})
    save_file(tensors, GOLDEN, metadata=metadata)
    sort_metadata(GOLDEN)


def self_check():
    """Reload the saved state_dict into a fresh model and reproduce the recorded output."""
    saved_tensors = load_file(GOLDEN)
    model = nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, proj_size=3)
    model.load_state_dict(load_file(STATE_DICT))
    with torch.no_grad():
        output = model(saved_tensors["f32.load_proj.input"])[0]
    assert torch.equal(output, saved_tensors["f32.load_proj.output"])


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
