"""Read a PyTorch checkpoint (``torch.save``'s zip format) into numpy arrays, without PyTorch and
without unpickling arbitrary objects.

A checkpoint is untrusted input: ``pickle`` runs whatever callable the file names. This reader's
unpickler resolves only what a checkpoint of tensors needs, and refuses every other name with a
``CheckpointError`` that says which:

- tensors: ``torch._utils._rebuild_tensor_v2`` (and ``_rebuild_tensor``), parameters
  (``_rebuild_parameter``, ``_rebuild_parameter_with_state``), the typed storages they point at
  (``torch.FloatStorage`` ... ``torch.BoolStorage``), ``torch.storage.UntypedStorage`` with a
  ``torch`` dtype where newer versions write one;
- containers and plain values: dicts, ``collections.OrderedDict``, lists, tuples, numbers, strings,
  bytes (``_codecs.encode(text, "latin1")``, how protocol 2 writes them), and numeric numpy scalars.

The zip holds ``<name>/data.pkl`` (the pickle) and ``<name>/data/<key>`` (each storage's raw bytes,
in the byte order of ``<name>/byteorder``, little-endian if absent). Tensors come back as C-contiguous
numpy arrays with their shape and dtype (bfloat16 as float32, which holds every bfloat16 value).
The legacy format (not a zip: torch < 1.6, or ``_use_new_zipfile_serialization=False``) is refused with
how to re-save it.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError

# torch's typed storages by class name -> numpy dtype ("bfloat16": converted to float32 after reading)
STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool",
}
# torch dtypes by attribute name (torch.float32 is pickled as the global "torch float32")
TORCH_DTYPES = {
    "float32": "float32", "float": "float32", "float64": "float64", "double": "float64", "float16": "float16",
    "half": "float16", "bfloat16": "bfloat16", "int64": "int64", "long": "int64", "int32": "int32", "int": "int32",
    "int16": "int16", "short": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool",
}


class _StorageType:
    """Stands for a torch storage class: only its dtype matters."""

    def __init__(self, dtype: str):
        self.dtype = dtype


class _TorchDtype(str):
    """Stands for a torch dtype (``torch.float32``)."""


class _Storage:
    """A storage's elements as a flat numpy array (bfloat16 kept as uint16 bits until a tensor is made)."""

    def __init__(self, array: np.ndarray, dtype: str):
        self.array, self.dtype = array, dtype


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *_ignored) -> np.ndarray:
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"a tensor is rebuilt from a {type(storage).__name__}, not a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride):
        raise CheckpointError(f"a tensor of size {size} has strides {stride}")
    count = len(storage.array)
    if size and min(size) > 0:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if offset < 0 or min(stride) < 0 or last >= count:
            raise CheckpointError(f"a tensor of size {size}, strides {stride}, offset {offset} reaches beyond its "
                                  f"storage of {count} elements")
    if not size:  # a 0-d tensor: one element
        if not 0 <= offset < count:
            raise CheckpointError(f"a 0-d tensor at offset {offset} lies beyond its storage of {count} elements")
        array = np.array(storage.array[offset])
    else:
        item = storage.array.itemsize
        view = np.lib.stride_tricks.as_strided(storage.array[offset:] if count else storage.array, shape=size,
                                               strides=tuple(s * item for s in stride), writeable=False)
        array = np.ascontiguousarray(view)
    if storage.dtype == "bfloat16":  # the upper 16 bits of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *state) -> np.ndarray:
    return data


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError(f"_codecs.encode is allowed only to write bytes as latin1 text, got encoding {encoding!r}")
    return text.encode("latin1")


def _numpy_dtype(name, *args) -> np.dtype:
    dtype = np.dtype(name)
    if dtype.kind not in "biuf":
        raise CheckpointError(f"numpy dtype {dtype} is not a number type")
    return dtype


def _numpy_scalar(dtype, data: bytes = b""):
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(data, bytes):
        raise CheckpointError("a numpy scalar that is not a number")
    return np.frombuffer(data, dtype=dtype, count=1)[0].item()


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("_codecs", "encode"): _latin1,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("torch.storage", "UntypedStorage"): _StorageType("uint8"),
    **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
    **{("torch", name): _TorchDtype(dtype) for name, dtype in TORCH_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str, where: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.byteorder, self.where = archive, prefix, byteorder, where
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        raise CheckpointError(
            f"{self.where} holds a pickled {module}.{name}, which this reader refuses: a checkpoint is untrusted "
            "input, and only tensors, dicts, lists, numbers and strings are read. Save just the weights, e.g. "
            "torch.save(model.state_dict(), PATH), and convert that"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{self.where}: unknown persistent reference {pid!r}")
        _, kind, key, _location, numel = pid
        if isinstance(kind, _TorchDtype):
            dtype = str(kind)
        elif isinstance(kind, _StorageType):
            dtype = kind.dtype
        else:
            raise CheckpointError(f"{self.where}: storage {key!r} of unknown type {kind!r}")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = self._read_storage(key, dtype, int(numel))
        return self.storages[key]

    def _read_storage(self, key: str, dtype: str, numel: int) -> _Storage:
        member = f"{self.prefix}/data/{key}"
        try:
            raw = self.archive.read(member)
        except KeyError:
            raise CheckpointError(f"{self.where}: storage {member} is missing from the archive") from None
        stored = np.dtype("uint16" if dtype == "bfloat16" else dtype).newbyteorder("<" if self.byteorder == "little" else ">")
        if len(raw) < numel * stored.itemsize:
            raise CheckpointError(f"{self.where}: storage {member} holds {len(raw)} bytes, {numel} {dtype} values need "
                                  f"{numel * stored.itemsize}")
        array = np.frombuffer(raw, dtype=stored, count=numel).astype(stored.newbyteorder("="))
        return _Storage(array, dtype)


def read_torch_checkpoint(path: str | Path) -> Any:
    """The object ``torch.save`` wrote to ``path`` (a zip checkpoint), tensors as numpy arrays (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        head = path.read_bytes()[:2]
        legacy = (" (it looks like torch's legacy format, written by torch < 1.6 or with "
                  "_use_new_zipfile_serialization=False: re-save it in the zip format with torch >= 1.6, also on a "
                  "machine without a GPU: torch.save(torch.load(PATH, map_location=\"cpu\"), NEW_PATH))"
                  if head[:1] == b"\x80" else "")
        raise CheckpointError(f"{path} is not a PyTorch zip checkpoint{legacy}")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path} is a zip but not a PyTorch checkpoint: expected one <name>/data.pkl, "
                                  f"found {len(pickles)}")
        prefix = pickles[0].split("/")[0]
        names = set(archive.namelist())
        byteorder = archive.read(f"{prefix}/byteorder").decode().strip() if f"{prefix}/byteorder" in names else "little"
        if byteorder not in ("little", "big"):
            raise CheckpointError(f"{path}: unknown byte order {byteorder!r}")
        unpickler = _Unpickler(archive.read(pickles[0]), archive, prefix, byteorder, str(path))
        try:
            return unpickler.load()
        except CheckpointError:
            raise
        except Exception as exc:  # a truncated or foreign pickle can raise almost anything
            raise CheckpointError(f"{path}: the checkpoint's pickle cannot be read ({type(exc).__name__}: {exc})") from None
