#!/bin/bash
# char_rnn's training throughput beside PyTorch's, alternating, two rounds: rewind with the batch
# in 1, 2 and 4 shards (or the shard counts in $SHARDS, e.g. SHARDS=2), then in one shard pinned
# to one core (`taskset -c 0`, for 2 cores against 1), then scripts/compare_pytorch.py --train on
# the same text. Prints each run's characters per second at step 300. Run from the repository's
# root after `cargo build --release --example char_rnn`; TEXT defaults to
# ../shared/data/tinyshakespeare.txt.
set -euo pipefail
TEXT=${1:-../shared/data/tinyshakespeare.txt}
CKPT=$(mktemp -d)/bench.safetensors
run() {
  "$@" --data "$TEXT" --layers 2 --hidden 256 --embed 64 --steps 300 --eval-every 100000 \
    --save-every 100000 --checkpoint "$CKPT" --overwrite 2>&1 | tr '\r' '\n' | grep 'chars/s' |
    tail -1
}
for round in 1 2; do
  for shards in ${SHARDS:-1 2 4}; do
    run target/release/examples/char_rnn --shards "$shards" |
      sed "s/^/round $round, rewind, $shards shards: /"
  done
  run taskset -c 0 target/release/examples/char_rnn --shards 1 |
    sed "s/^/round $round, rewind, 1 shard on 1 core: /"
  python3 scripts/compare_pytorch.py --train "$TEXT" | tail -1 | sed "s/^/round $round, PyTorch: /"
done
