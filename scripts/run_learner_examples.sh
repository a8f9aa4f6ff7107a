#!/usr/bin/env bash
# Runs the numbered learner examples (examples/NN-*.rs) in their reading order. Each one asserts
# its own claims, so a wrong claim is a panic and a non-zero exit: the script stops at the first
# example that fails and names it. Arguments go to `cargo run` (for instance `--release`).
# Run from anywhere; CI calls it from .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

shopt -s nullglob
examples=(examples/[0-9][0-9]-*.rs)
if [ ${#examples[@]} -eq 0 ]; then
    echo "run_learner_examples: no examples/NN-*.rs found" >&2
    exit 1
fi
for path in "${examples[@]}"; do
    name=$(basename "$path" .rs)
    echo "== $name"
    if ! cargo run --quiet "$@" --example "$name"; then
        echo "run_learner_examples: $name failed" >&2
        exit 1
    fi
done
echo "run_learner_examples: all ${#examples[@]} passed"
