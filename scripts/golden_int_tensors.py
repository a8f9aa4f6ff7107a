"""A safetensors file holding integer tensors beside a float one, as PyTorch writes it.

Writes tests/data/int_tensors.safetensors, read by tests/nn/nn_weights.rs: `ids` int64 [2, 3]
(token ids, one negative as an ignore index), `lengths` int32 [2], `mask` uint8 [2, 3] and
`w` float32 [2], with the metadata {"generator": ..., "torch": ...}.

Run: python3 scripts/golden_int_tensors.py   (needs torch and safetensors)
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

from safetensors_metadata import sort_metadata

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "data" / "int_tensors.safetensors"

tensors = {
    "ids": torch.tensor([[5, 0, 2**40], [-100, 7, 1]], dtype=torch.int64),
    "lengths": torch.tensor([3, 2], dtype=torch.int32),
    "mask": torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.uint8),
    "w": torch.tensor([0.5, -1.25], dtype=torch.float32),
}
save_file(tensors, GOLDEN, metadata={"generator": "scripts/golden_int_tensors.py", "torch": torch.__version__})
sort_metadata(GOLDEN)
print(f"wrote {GOLDEN}")
