#!/bin/bash
# char_rnn's training throughput beside PyTorch's, alternating, two rounds: rewind with the batch
# in 1, 2 and 4 shards, then scripts/compare_pytorch.py --train on the same text. Prints each
# run's characters per second at step 300. Run from the repository's root after
# `cargo build --release --example char_rnn`; TEXT defaults to ../shared/data/tinyshakespeare.txt.
set -euo pipefail
TEXT=${1:-../shared/data/tinyshakespeare.txt}
CKPT=$(mktemp -d)/bench.safetensors
for round in 1 2; do
  for shards in 1 2 4; do
    target/release/examples/char_rnn --data "$TEXT" --layers 2 --hidden 256 --embed 64 \
      --steps 300 --eval-every 100000 --save-every 100000 --shards "$shards" \
      --checkpoint "$CKPT" --overwrite 2>&1 | tr '\r' '\n' | grep 'chars/s' | tail -1 |
      sed "s/^/round $round, rewind, $shards shards: /"
  done
  python3 scripts/compare_pytorch.py --train "$TEXT" | tail -1 | sed "s/^/round $round, PyTorch: /"
done
