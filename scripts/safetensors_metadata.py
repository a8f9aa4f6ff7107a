"""Sorting a safetensors file's metadata, which the golden_*.py scripts do to every file they write.

safetensors writes __metadata__ in hash-map order, which changes from run to run; sorting it makes
the files byte-for-byte reproducible (no spurious git diffs).
"""

import json
import struct


def sort_metadata(path):
    """Rewrite the header with its metadata keys sorted, in place.

    The header keeps its length, so the tensor data does not move.
    """
    with open(path, "r+b") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":")).encode()
        assert len(text) <= size, "rewritten header grew"
        f.seek(8)
        f.write(text.ljust(size, b" "))
