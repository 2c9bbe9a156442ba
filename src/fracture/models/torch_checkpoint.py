"""A numpy-only reader for PyTorch's *legacy* (pre-1.6, non-zip) checkpoint format.

So pretrained weights shipped as `.pth` files can be used without torch as a dependency.
The legacy format is a sequence of pickles in one file:

1. the magic number, 2. the protocol version, 3. system info (endianness, type sizes),
4. the object itself (here a state dict), whose tensors reference storages through
   `persistent_load` ids `("storage", storage_type, key, location, numel, view)`,
5. the list of storage keys, then, per key, an int64 element count and the raw bytes.

Only what state dicts need is supported: `collections.OrderedDict`, `torch._utils.
_rebuild_tensor(_v2)` and the typed storages. Anything else is refused (the unpickler never
imports arbitrary classes), so a malicious file cannot run code.
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointFormatError(ValueError):
    """The file is not a legacy PyTorch checkpoint this reader understands."""


@dataclass
class _StorageType:
    name: str


@dataclass
class _Storage:
    key: str
    dtype: type
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple
    stride: tuple

    def materialize(self) -> np.ndarray:
        if self.storage.data is None:
            raise CheckpointFormatError(f"storage {self.storage.key} was never read")
        flat = self.storage.data
        if not self.size:
            return flat[self.offset].copy()
        itemsize = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.size, strides=tuple(s * itemsize for s in self.stride)
        )
        return np.array(view)  # own the memory, contiguous


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused):
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointFormatError(f"refusing to load {module}.{name}: not part of a plain state dict")

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] == "storage"):
            raise CheckpointFormatError(f"unsupported persistent id {saved_id!r}")
        _, storage_type, key, _location, numel, *_view = saved_id
        if key not in self.storages:
            self.storages[key] = _Storage(key, STORAGE_DTYPES[storage_type.name], int(numel))
        return self.storages[key]


def read_legacy_state_dict(path: str | Path) -> "collections.OrderedDict[str, np.ndarray]":
    """Read a legacy-format `.pth` state dict into numpy arrays (names and shapes as in torch)."""
    path = Path(path)
    with path.open("rb") as f:
        try:
            magic = pickle.load(f)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointFormatError(f"{path}: not a legacy PyTorch checkpoint ({exc})") from exc
        if magic != MAGIC_NUMBER:
            if path.read_bytes()[:2] == b"PK":
                raise CheckpointFormatError(f"{path}: a zip-format (torch >= 1.6) checkpoint; this reader handles the legacy format")
            raise CheckpointFormatError(f"{path}: wrong magic number; not a legacy PyTorch checkpoint")
        pickle.load(f)  # protocol version
        sys_info = pickle.load(f)
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise CheckpointFormatError(f"{path}: big-endian checkpoints are not supported")
        storages: dict[str, _Storage] = {}
        state = _Unpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            storage = storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            if numel != storage.numel:
                raise CheckpointFormatError(f"{path}: storage {key} has {numel} elements, expected {storage.numel}")
            raw = f.read(numel * np.dtype(storage.dtype).itemsize)
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    if not isinstance(state, dict):
        raise CheckpointFormatError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return collections.OrderedDict(
        (name, value.materialize() if isinstance(value, _TensorRef) else value) for name, value in state.items()
    )
