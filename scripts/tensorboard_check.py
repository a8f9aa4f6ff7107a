"""Reads char_rnn's TensorBoard event files with TensorBoard's own reader and prints every scalar.

Its output is committed as tests/data/tensorboard_check.txt, which tests/apps/char_rnn_metrics.rs
(`tensorboard_reads_the_event_file_as_scripts_tensorboard_check_py_recorded`) compares with a
fresh run of the example (every value but the speed), so that CI checks the example's event
files against the real reader without Python. To regenerate:

    rm -rf /tmp/tb && mkdir /tmp/tb
    cargo run --example char_rnn -- --data tests/data/tensorboard_check_text.txt \
        --checkpoint /tmp/tb/m.safetensors --overwrite --batch 2 --seq-len 8 --hidden 8 --embed 4 \
        --shards 1 --steps 6 --eval-every 3 --log-every 2 --tensorboard /tmp/tb/events
    python3 scripts/tensorboard_check.py /tmp/tb/events > tests/data/tensorboard_check.txt

(needs `pip install tensorboard`). Each line is `tag step value`; wall times are left out.
"""

import sys

import tensorboard
from tensorboard.backend.event_processing import event_accumulator


def main(directory):
    acc = event_accumulator.EventAccumulator(directory, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    print(f"# scripts/tensorboard_check.py, tensorboard {tensorboard.__version__}")
    print(f"file_version {acc.file_version}")
    for tag in sorted(acc.Tags()["scalars"]):
        for event in acc.Scalars(tag):
            print(f"{tag} {event.step} {event.value!r}")


if __name__ == "__main__":
    main(sys.argv[1])
