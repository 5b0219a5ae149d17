"""Read a PyTorch `.pth` state dict into numpy arrays, without torch.

Two layouts exist. Since PyTorch 1.6 a `.pth` is a zip holding `<name>/data.pkl` (the pickled
structure) and one raw file per storage, `<name>/data/<key>`. Before that (the "legacy" format,
still shipped by many packages) the file is a run of pickles: a magic number, the protocol
version, system info, the structure, the list of storage keys, then each storage as an 8-byte
element count followed by its raw little-endian bytes.

Pickles execute code, so both are read with an unpickler that resolves only the few globals a
state dict needs (tensor rebuild functions, storage types, `OrderedDict`) to harmless local
stand-ins; any other global is refused with a `ValueError` naming the file.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["PthError", "load_state_dict"]

# torch.serialization.MAGIC_NUMBER and PROTOCOL_VERSION of the legacy format.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Storage type name → numpy dtype (little-endian, as torch writes on every platform we use).
# BFloat16 has no numpy dtype: its 16 bits are the top half of a float32, widened on read.
_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class PthError(ValueError):
    """A file that is not a readable PyTorch state dict (the message names the file)."""


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass
class _Storage:
    """A storage named by the pickle; its bytes are filled in after unpickling."""

    key: str
    storage_type: str
    numel: int
    data: NDArray[Any] | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int  # in elements, as torch counts it
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: _Storage | tuple[_Storage, int],
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    *_ignored: Any,
) -> _TensorRef:
    # Legacy views arrive as (root storage, element offset into it).
    if isinstance(storage, tuple):
        storage, view_offset = storage
        storage_offset += view_offset
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: _TensorRef, *_ignored: Any) -> _TensorRef:
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED_GLOBALS`; storages become `_Storage` placeholders."""

    def __init__(self, file: IO[bytes], source: Path, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._source = source
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise PthError(
                f"{self._source}: unexpected pickle global {module}.{name}; "
                "only plain tensor state dicts are read"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise PthError(f"{self._source}: unexpected persistent id {pid!r}")
        # zip: ('storage', type, key, location, numel)
        # legacy: ('storage', type, root_key, location, numel, view_metadata)
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise PthError(f"{self._source}: storage {key} has unknown type {storage_type!r}")
        storage = self._storages.get(str(key))
        if storage is None:
            storage = _Storage(str(key), storage_type.name, int(numel))
            self._storages[storage.key] = storage
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            _view_key, view_offset, _view_size = view
            return (storage, int(view_offset))
        return storage


def load_state_dict(path: str | Path) -> dict[str, NDArray[Any]]:
    """Read a PyTorch state dict (zip or legacy `.pth`) as numpy arrays, without torch.

    Args:
        path: The `.pth` file.

    Returns:
        Parameter name → array, in the file's order, with torch's dtype (bfloat16 widened to
        float32), shape and strides resolved; each array owns its memory.

    Raises:
        PthError: (a `ValueError`) the file is neither format, refers to a global that a plain
            state dict does not need, is truncated, or does not hold a dict of tensors.
        FileNotFoundError: `path` does not exist.
    """
    source = Path(path)
    raw = source.read_bytes()
    storages: dict[str, _Storage] = {}
    try:
        if zipfile.is_zipfile(io.BytesIO(raw)):
            structure = _load_zip(raw, source, storages)
        else:
            structure = _load_legacy(raw, source, storages)
    except PthError:
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError, TypeError) as exc:
        raise PthError(f"{source}: not a readable PyTorch .pth file ({exc})") from exc

    if not isinstance(structure, dict):
        raise PthError(f"{source}: holds a {type(structure).__name__}, not a state dict")
    state: dict[str, NDArray[Any]] = {}
    for name, value in structure.items():
        if not isinstance(value, _TensorRef):
            raise PthError(f"{source}: entry {name!r} is a {type(value).__name__}, not a tensor")
        state[str(name)] = _to_array(value, source, str(name))
    return state


def _load_zip(raw: bytes, source: Path, storages: dict[str, _Storage]) -> Any:
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise PthError(f"{source}: zip holds {len(pickles)} data.pkl entries, expected one")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = prefix + "byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise PthError(f"{source}: big-endian tensors are not supported")
        structure = _RestrictedUnpickler(
            io.BytesIO(archive.read(pickles[0])), source, storages
        ).load()
        for storage in storages.values():
            dtype = _STORAGE_DTYPES[storage.storage_type]
            data = archive.read(f"{prefix}data/{storage.key}")
            storage.data = _storage_array(data, dtype, storage, source)
    return structure


def _load_legacy(raw: bytes, source: Path, storages: dict[str, _Storage]) -> Any:
    stream = io.BytesIO(raw)
    try:
        magic = pickle.Unpickler(stream).load() if raw[:1] == b"\x80" else None
    except Exception:  # any garbage that happens to start like a pickle
        magic = None
    if magic != _LEGACY_MAGIC:
        raise PthError(f"{source}: not a PyTorch .pth file (neither a zip nor the legacy format)")
    # Protocol version and system info hold only ints, strings and dicts: still restricted.
    protocol = _RestrictedUnpickler(stream, source, storages).load()
    if protocol != _LEGACY_PROTOCOL:
        raise PthError(f"{source}: legacy protocol {protocol!r} is not supported")
    sys_info = _RestrictedUnpickler(stream, source, storages).load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise PthError(f"{source}: big-endian tensors are not supported")
    structure = _RestrictedUnpickler(stream, source, storages).load()
    keys = _RestrictedUnpickler(stream, source, storages).load()
    for key in keys:
        storage = storages[str(key)]
        dtype = _STORAGE_DTYPES[storage.storage_type]
        (numel,) = struct.unpack("<q", stream.read(8))
        data = stream.read(numel * dtype.itemsize)
        storage.data = _storage_array(data, dtype, storage, source)
    return structure


def _storage_array(
    data: bytes, dtype: np.dtype[Any], storage: _Storage, source: Path
) -> NDArray[Any]:
    if len(data) < storage.numel * dtype.itemsize:
        raise PthError(
            f"{source}: storage {storage.key} truncated: {len(data)} bytes for "
            f"{storage.numel} elements of {dtype}"
        )
    return np.frombuffer(data, dtype=dtype, count=storage.numel)


def _to_array(ref: _TensorRef, source: Path, name: str) -> NDArray[Any]:
    flat = ref.storage.data
    if flat is None:
        raise PthError(f"{source}: tensor {name!r} refers to missing storage {ref.storage.key}")
    if len(ref.shape) != len(ref.stride):
        raise PthError(f"{source}: tensor {name!r} has shape {ref.shape} but stride {ref.stride}")
    if any(n == 0 for n in ref.shape):
        array: NDArray[Any] = np.zeros(ref.shape, dtype=flat.dtype)
    else:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True))
        if ref.offset < 0 or min(ref.stride, default=0) < 0 or last >= flat.size:
            raise PthError(
                f"{source}: tensor {name!r} (offset {ref.offset}, shape {ref.shape}, "
                f"stride {ref.stride}) reaches past its storage of {flat.size} elements"
            )
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset :],
            shape=ref.shape,
            strides=tuple(s * itemsize for s in ref.stride),
            writeable=False,
        )
        array = np.array(view, dtype=flat.dtype.newbyteorder("="), order="C")
    if ref.storage.storage_type == "BFloat16Storage":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array
