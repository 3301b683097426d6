"""Minimal safetensors reader/writer (no dependency beyond numpy and torch).

Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
data_offsets: [begin, end)}, "__metadata__": {str: str}}, then the raw little-endian data.
The writer sorts tensors by name, packs them back to back in that order and pads the header
with spaces to a multiple of 8 bytes, so equal inputs give byte-identical files.
Supported dtypes: F32, F16, BF16, I32, I64, U8.
"""

from __future__ import annotations

import json
import struct
from typing import Dict, Optional, Tuple

import numpy as np
import torch

_TORCH_TO_ST = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int32: "I32", torch.int64: "I64", torch.uint8: "U8",
}
_ST_TO_NP = {"F32": np.float32, "F16": np.float16, "BF16": np.int16, "I32": np.int32, "I64": np.int64, "U8": np.uint8}
_ST_TO_TORCH = {v: k for k, v in _TORCH_TO_ST.items()}


def _to_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    arr = t.numpy()
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def save_file(tensors: Dict[str, torch.Tensor], path: str, metadata: Optional[Dict[str, str]] = None) -> None:
    header: Dict[str, object] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"metadata must map str to str, got {k!r}: {type(v).__name__}")
        header["__metadata__"] = dict(sorted(metadata.items()))
    blobs = []
    off = 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _TORCH_TO_ST:
            raise TypeError(f"{name}: unsupported dtype {t.dtype}")
        b = _to_bytes(t)
        header[name] = {"dtype": _TORCH_TO_ST[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hj)))
        fh.write(hj)
        for b in blobs:
            fh.write(b)


def load_file(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Returns (tensors, metadata)."""
    with open(path, "rb") as fh:
        data = fh.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out: Dict[str, torch.Tensor] = {}
    for name, info in header.items():
        dt = info["dtype"]
        if dt not in _ST_TO_NP:
            raise TypeError(f"{name}: unsupported dtype {dt}")
        b0, b1 = info["data_offsets"]
        arr = np.frombuffer(data, dtype=np.dtype(_ST_TO_NP[dt]).newbyteorder("<"), count=(b1 - b0) // np.dtype(_ST_TO_NP[dt]).itemsize, offset=base + b0)
        arr = arr.astype(np.dtype(_ST_TO_NP[dt]).newbyteorder("="), copy=True).reshape(info["shape"])
        t = torch.from_numpy(arr)
        if dt == "BF16":
            t = t.view(torch.bfloat16)
        out[name] = t
    return out, dict(meta)
