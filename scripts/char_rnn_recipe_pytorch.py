"""char_rnn's training recipe in PyTorch, for the README's 10-minute table beside rewind's run.

The same model, data, schedule and evaluation as `char_rnn` (examples/char_rnn), flag for flag:
an embedding -> dropout (--input-dropout) -> an LSTM stack (dropout between layers) -> dropout
(--head-dropout) -> a linear readout; the text's last 10% held out; the rest read as --batch lanes of equal length, --seq-len
characters per update with the state carried and detached (truncated BPTT), back to the start
from a zero state when a lane runs out; cross-entropy averaged over the chunk; the global
gradient norm clipped; Adam or AdamW with its beta2 and weight decay; the learning rate warmed up
over --warmup updates, then constant or half a cosine down to --min-lr over the run's --steps, or
over its --minutes by the clock; the forget gates' biases started at --forget-bias (b_ih's forget
block, b_hh's 0); with --ema D, validation scores an exponential average of the weights
(AveragedModel with get_ema_multi_avg_fn(D), updated after every step), and the last line gives
the trained weights' figure beside it.
Validation is char_rnn's: the held-out text as min(batch, len/2) lanes, --seq-len chunks, the
state carried, mean nats per character, dropout off.

Writes a metrics file in char_rnn's format (`step,elapsed_s,...`; `char_rnn plot` draws it) and
prints the validation loss at every --eval-every updates and at the end.

Run: python3 scripts/char_rnn_recipe_pytorch.py --minutes 10 --metrics torch.metrics.csv \\
         --forget-bias 1 --schedule cosine --warmup 100 --optim adamw --beta2 0.99
(needs torch; 2 threads, as the machines rewind is measured on have 2 cores)
"""

import argparse
import math
import time

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

TEXT = "examples/char_rnn/tinyshakespeare.txt"


def flags():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=TEXT)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--embed", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.25)
    p.add_argument("--head-dropout", type=float, default=0.0)
    p.add_argument("--input-dropout", type=float, default=0.0)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--optim", choices=["adam", "adamw"], default="adam")
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--forget-bias", type=float, default=None)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--ema", type=float, default=0.0)
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int)
    budget.add_argument("--minutes", type=float)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--metrics", default=None)
    return p.parse_args()


class CharModel(nn.Module):
    def __init__(self, a, vocab):
        super().__init__()
        self.embed = nn.Embedding(vocab, a.embed)
        self.rnn = nn.LSTM(a.embed, a.hidden, a.layers, dropout=a.dropout)
        self.drop_input = nn.Dropout(a.input_dropout)
        self.drop = nn.Dropout(a.head_dropout)
        self.head = nn.Linear(a.hidden, vocab)
        if a.forget_bias is not None:
            h = a.hidden
            with torch.no_grad():
                for layer in range(a.layers):
                    getattr(self.rnn, f"bias_ih_l{layer}")[h : 2 * h] = a.forget_bias
                    getattr(self.rnn, f"bias_hh_l{layer}")[h : 2 * h] = 0.0

    def forward(self, x, state):
        out, state = self.rnn(self.drop_input(self.embed(x)), state)
        return self.head(self.drop(out)), state


class Lanes:
    """Tokens cut into lanes of equal length, read time-major a chunk at a time."""

    def __init__(self, ids, lanes):
        self.lane_len = len(ids) // lanes
        self.ids = ids[: lanes * self.lane_len].view(lanes, self.lane_len).t()  # [time, lane]
        self.at = 0

    def take(self, k):
        left = self.lane_len - 1 - self.at
        if left <= 0:
            return None
        n = min(k, left)
        chunk = self.ids[self.at : self.at + n + 1]
        self.at += n
        return chunk[:-1], chunk[1:]


def scheduled_lr(a, step, done):
    peak = a.lr
    if a.schedule == "cosine":
        peak = a.min_lr + (a.lr - a.min_lr) * (1 + math.cos(math.pi * min(max(done, 0), 1))) / 2
    return peak * (step + 1) / a.warmup if step < a.warmup else peak


@torch.no_grad()
def evaluate(model, val, a, vocab):
    model.eval()
    stream, state = Lanes(val, max(1, min(a.batch, len(val) // 2))), None
    total, count = 0.0, 0
    while (chunk := stream.take(a.seq_len)) is not None:
        x, y = chunk
        logits, state = model(x, state)
        total += nn.functional.cross_entropy(
            logits.reshape(-1, vocab), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count


def main():
    a = flags()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    text = open(a.data, encoding="utf-8").read()
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text])
    split = len(ids) - len(ids) // 10
    train, val = ids[:split], ids[split:]
    model = CharModel(a, len(vocab))
    decay = a.weight_decay if a.weight_decay is not None else (1e-2 if a.optim == "adamw" else 0.0)
    make = torch.optim.AdamW if a.optim == "adamw" else torch.optim.Adam
    opt = make(model.parameters(), lr=a.lr, betas=(0.9, a.beta2), weight_decay=decay)
    stream, state = Lanes(train, a.batch), None
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(a.ema)) if a.ema else None
    scored = average.module if average else model
    log = open(a.metrics, "w", encoding="utf-8") if a.metrics else None
    if log:
        log.write("step,elapsed_s,chars_per_s,train_loss,train_loss_smooth,val_loss,lr,"
                  "grad_norm,clipped\n")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads: "
          f"{a.layers} x {a.hidden} LSTM, {sum(p.numel() for p in model.parameters())} parameters")
    start, step, smooth, chars, val_loss = time.perf_counter(), 0, None, 0, float("nan")
    budget = a.minutes * 60 if a.minutes else None
    while True:
        chunk = stream.take(a.seq_len)
        if chunk is None:
            stream.at, state = 0, None
            continue
        x, y = chunk
        done = (time.perf_counter() - start) / budget if budget else step / a.steps
        lr = scheduled_lr(a, step, done)
        for g in opt.param_groups:
            g["lr"] = lr
        logits, state = model(x, state)
        state = tuple(s.detach() for s in state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), a.clip).item() if a.clip > 0 else 0.0
        opt.step()
        if average:
            average.update_parameters(model)
        step += 1
        chars += y.numel()
        loss = loss.item()
        smooth = loss if smooth is None else 0.95 * smooth + 0.05 * loss
        elapsed = time.perf_counter() - start
        last = elapsed >= budget if budget else step >= a.steps
        evaluated = step % a.eval_every == 0 or last
        if evaluated:
            val_loss = evaluate(scored, val, a, len(vocab))
            print(f"step {step:>6}  {elapsed:7.1f} s  train {smooth:.3f}  "
                  f"validation {val_loss:.4f} nats/char", flush=True)
        if log and (step % 10 == 0 or evaluated):
            clipped = a.clip > 0 and a.clip / (norm + 1e-6) < 1.0
            log.write(f"{step},{elapsed:.3f},{chars / elapsed:.0f},{loss!r},{smooth!r},"
                      f"{repr(val_loss) if evaluated else ''},{lr!r},{norm!r},{int(clipped)}\n")
            log.flush()
        if last:
            break
    trained = f" (the weights' average; {evaluate(model, val, a, len(vocab)):.4f} with the trained weights)" if average else ""
    print(f"done: {step} steps in {time.perf_counter() - start:.1f} s, "
          f"{chars / (time.perf_counter() - start):.0f} chars/s, validation {val_loss:.4f}{trained}")


if __name__ == "__main__":
    main()
