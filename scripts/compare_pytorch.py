"""PyTorch's side of rewind's benchmarks, on the same machine, with 2 threads.

1. The training-step grid of benches/step.rs: one step (forward, cross-entropy, backward,
   global-norm clip 5, Adam) of an embedding (V = 65) -> one recurrent layer -> linear readout,
   B = 32, T = 64 (T = 32 at H = 1024), for H = 128, 256, 512, 1024; with the fused layer
   (nn.LSTM / nn.GRU / nn.RNN) and with the unrolled cell loop (nn.LSTMCell / GRUCell / RNNCell).
2. The sequence-length sweep of examples/bptt_report.rs: forward and backward ms of the fused
   layer model (H = 256) for T = 16 ... 1024, full BPTT.

3. With --sample: batch-1 generation as `char_rnn sample` does it, an embedding (64) -> a 2 x 256
   LSTM -> linear readout, state carried, softmax and multinomial per character, no_grad:
   characters per second (benches/README.md, "Sampling speed").
4. With --f64: the training-step grid of 1. in float64 at H = 128, 256, 512, as benches/step.rs's
   `f64_step` rows. With --cells lstm,gru: the grid of 1. for those cells only (no sweep), to
   alternate with `cargo bench --bench step -- step_lstm` for a second round of one cell.
5. With --train PATH: char_rnn's training loop on the text at PATH, as
   `char_rnn train --layers 2 --hidden 256 --embed 64` runs it: the text read as 32 streams,
   64 characters per step, the state carried and detached between steps, cross-entropy, global
   norm clip 5, Adam 2e-3; characters per second over 300 steps after 20 to warm up.
   With --metrics FILE also, every step is written to FILE in the format of char_rnn's
   <checkpoint>.metrics.csv (examples/char_rnn/metrics.rs), for `char_rnn plot` to draw beside a
   rewind run; it has no validation loss.

Prints tables in the layout of benches/README.md. Medians over repeated runs.

Run: python3 scripts/compare_pytorch.py [--quick] [--sample] [--f64] [--cells LIST]
     [--train PATH [--metrics FILE]]
(needs torch)
"""

import statistics
import sys
import time

import torch
from torch import nn

torch.set_num_threads(2)
torch.manual_seed(0)
V, B = 65, 32
QUICK = "--quick" in sys.argv


class Model(nn.Module):
    def __init__(self, kind, hidden, unrolled):
        super().__init__()
        self.kind, self.unrolled = kind, unrolled
        self.embed = nn.Embedding(V, hidden)
        layer = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
        cell = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}[kind]
        self.rnn = cell(hidden, hidden) if unrolled else layer(hidden, hidden)
        self.head = nn.Linear(hidden, V)

    def forward(self, tokens):
        x = self.embed(tokens)  # [T, B, H]
        if not self.unrolled:
            out, _ = self.rnn(x)
        else:
            h = torch.zeros(B, self.rnn.hidden_size)
            c = torch.zeros(B, self.rnn.hidden_size)
            outs = []
            for t in range(x.shape[0]):
                if self.kind == "lstm":
                    h, c = self.rnn(x[t], (h, c))
                else:
                    h = self.rnn(x[t], h)
                outs.append(h)
            out = torch.stack(outs)
        return self.head(out)


def median_ms(fn, repeats):
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def step_grid(sizes=(128, 256, 512, 1024), kinds=("lstm", "gru", "rnn")):
    print("training step (forward, cross-entropy, backward, clip 5, Adam), B = 32, V = 65, ms, "
          f"{torch.get_default_dtype()}")
    print(f"{'cell':<5} {'H':>5} {'T':>4} {'fused':>9} {'unrolled':>9}")
    for kind in kinds:
        for hidden in sizes:
            steps = 32 if hidden == 1024 else 64
            tokens = torch.randint(0, V, (steps + 1, B))
            row = []
            for unrolled in [False, True]:
                model = Model(kind, hidden, unrolled)
                opt = torch.optim.Adam(model.parameters(), lr=2e-3)

                def step():
                    logits = model(tokens[:-1])
                    loss = nn.functional.cross_entropy(logits.reshape(-1, V), tokens[1:].reshape(-1))
                    opt.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                    opt.step()

                row.append(median_ms(step, 5 if QUICK else 15))
            print(f"{kind:<5} {hidden:>5} {steps:>4} {row[0]:>9.1f} {row[1]:>9.1f}")


def sweep():
    print("\nfull BPTT, fused layer, H = 256: forward and backward ms")
    print(f"{'cell':<5} {'T':>6} {'forward':>9} {'backward':>9} {'bwd/fwd':>8}")
    for kind in ["rnn", "lstm", "gru"]:
        model = Model(kind, 256, False)
        for steps in [16, 32, 64, 128, 256, 512, 1024]:
            tokens = torch.randint(0, V, (steps + 1, B))
            fwd, bwd = [], []
            for _ in range(3 if QUICK else 5):
                start = time.perf_counter()
                logits = model(tokens[:-1])
                loss = nn.functional.cross_entropy(logits.reshape(-1, V), tokens[1:].reshape(-1))
                mid = time.perf_counter()
                model.zero_grad()
                loss.backward()
                end = time.perf_counter()
                fwd.append((mid - start) * 1e3)
                bwd.append((end - mid) * 1e3)
            f, b = statistics.median(fwd), statistics.median(bwd)
            print(f"{kind:<5} {steps:>6} {f:>9.2f} {b:>9.2f} {b / f:>8.2f}")


def sampling():
    embed, lstm, head = nn.Embedding(V, 64), nn.LSTM(64, 256, 2), nn.Linear(256, V)

    def generate(n):
        x, state = torch.tensor([[0]]), None
        with torch.no_grad():
            for _ in range(n):
                y, state = lstm(embed(x), state)
                p = torch.softmax(head(y[0, 0]), -1)
                x = torch.tensor([[torch.multinomial(p, 1).item()]])

    generate(200)  # warm up
    times = {}
    for n in [2000, 20000]:
        start = time.perf_counter()
        generate(n)
        times[n] = time.perf_counter() - start
    rate = (20000 - 2000) / (times[20000] - times[2000])
    print(f"batch-1 sampling, 2 x 256 LSTM: 2,000 chars {times[2000]:.2f} s, "
          f"20,000 chars {times[20000]:.2f} s, {rate:.0f} chars/s")


def training(path, metrics=None):
    text = open(path, encoding="utf-8").read()
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text])
    lanes, steps_len = 32, 64
    per_lane = (len(ids) - 1) // lanes
    inputs = ids[: lanes * per_lane].view(lanes, per_lane).t()  # [time, lane]
    targets = ids[1 : lanes * per_lane + 1].view(lanes, per_lane).t()
    embed, lstm, head = nn.Embedding(len(vocab), 64), nn.LSTM(64, 256, 2), nn.Linear(256, len(vocab))
    params = [*embed.parameters(), *lstm.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=2e-3)
    state, at = None, 0
    log = Metrics(metrics, lanes * steps_len) if metrics else None

    def step():
        nonlocal state, at
        if at + steps_len > per_lane:
            state, at = None, 0
        x, y = inputs[at : at + steps_len], targets[at : at + steps_len]
        at += steps_len
        out, state = lstm(embed(x), state)
        state = tuple(s.detach() for s in state)
        loss = nn.functional.cross_entropy(head(out).reshape(-1, len(vocab)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        norm = nn.utils.clip_grad_norm_(params, 5.0).item()
        opt.step()
        if log:
            log.row(loss.item(), 2e-3, norm, 5.0 / (norm + 1e-6) < 1.0)
        return loss.item()

    for _ in range(20):
        step()
    start = time.perf_counter()
    for _ in range(300):
        loss = step()
    took = time.perf_counter() - start
    print(f"char_rnn training, 2 x 256 LSTM, batch 32 x 64 chars: 300 steps {took:.2f} s, "
          f"{300 * lanes * steps_len / took:.0f} chars/s (last loss {loss:.3f})")


class Metrics:
    """char_rnn's metrics file: the same header and columns, one whole line per write."""

    HEADER = "step,elapsed_s,chars_per_s,train_loss,train_loss_smooth,val_loss,lr,grad_norm,clipped"

    def __init__(self, path, chars_per_step):
        self.file = open(path, "w", encoding="utf-8")
        self.file.write(self.HEADER + "\n")
        self.chars_per_step, self.step, self.smooth = chars_per_step, 0, None
        self.start = time.perf_counter()

    def row(self, loss, lr, norm, clipped):
        self.step += 1
        # As char_rnn smooths: 0.05 of each step's loss.
        self.smooth = loss if self.smooth is None else 0.95 * self.smooth + 0.05 * loss
        elapsed = time.perf_counter() - self.start
        speed = self.step * self.chars_per_step / elapsed
        self.file.write(f"{self.step},{elapsed:.3f},{speed:.0f},{loss!r},{self.smooth!r},,"
                        f"{lr!r},{norm!r},{int(clipped)}\n")
        self.file.flush()


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if "--sample" in sys.argv:
        sampling()
    elif "--f64" in sys.argv:
        torch.set_default_dtype(torch.float64)
        step_grid((128, 256, 512))
    elif "--cells" in sys.argv:
        at = sys.argv.index("--cells") + 1
        kinds = sys.argv[at].split(",") if at < len(sys.argv) else []
        if not kinds or any(k not in ("lstm", "gru", "rnn") for k in kinds):
            sys.exit(f"--cells takes lstm, gru and rnn, comma-separated, not {sys.argv[at:at + 1]}")
        step_grid(kinds=kinds)
    elif "--train" in sys.argv:
        metrics = sys.argv[sys.argv.index("--metrics") + 1] if "--metrics" in sys.argv else None
        training(sys.argv[sys.argv.index("--train") + 1], metrics)
    else:
        step_grid()
        sweep()
