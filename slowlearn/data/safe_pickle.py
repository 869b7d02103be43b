"""Reading CIFAR-10's python batches without letting the file run code.

The official `cifar-10-batches-py` files are pickles, and `pickle.load` calls whatever a file names,
so a crafted batch file could run any command. These files need only a dict of bytes keys holding
lists, bytes and one uint8 numpy array, so the unpickler here resolves exactly the few callables
that rebuild such an array (and that Python 3 uses to write bytes) and refuses every other one,
before calling anything. What it returns is then checked against the format.
"""
from __future__ import annotations

import _codecs
import pickle
from pathlib import Path

import numpy as np

__all__ = ["read_cifar_batch", "UnsafePickleError"]


class UnsafePickleError(pickle.UnpicklingError):
    """The file names a callable that a CIFAR-10 batch does not need."""


def _reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"an array of type {subtype!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _dtype(spec, *args):
    dtype = np.dtype(spec, *args)
    if dtype.hasobject:
        raise UnsafePickleError(f"an array of Python objects ({dtype})")
    return dtype


def _encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode of {type(text).__name__} with {encoding!r}")
    return _codecs.encode(text, encoding)


ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
           ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
           ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _dtype, ("_codecs", "encode"): _encode}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        allowed = ALLOWED.get((module, name))
        if allowed is None:
            raise UnsafePickleError(f"it names {module}.{name}")
        return allowed


def read_cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """Images (N x 3072 uint8) and labels of one CIFAR-10 python batch file, refusing anything else."""
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
        ok = (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
              and isinstance(labels, list) and len(labels) == len(data)
              and all(isinstance(v, int) and 0 <= v < 10 for v in labels))
    except UnsafePickleError as e:
        raise ValueError(f"Refused to load {path}: {e}, which a CIFAR-10 batch never does, so the file may run code "
                         f"when un-pickled. Delete it and download CIFAR-10 again from its official site.") from None
    except (pickle.UnpicklingError, EOFError, TypeError, KeyError, AttributeError, ValueError) as e:
        raise ValueError(f"{path} is not a readable CIFAR-10 batch ({type(e).__name__}: {e}): delete it and download "
                         f"CIFAR-10 again.") from None
    if not ok:
        raise ValueError(f"{path} is not a CIFAR-10 batch (expected a uint8 N x 3072 array under b'data' and N labels "
                         f"0-9 under b'labels'): delete it and download CIFAR-10 again.")
    return data, labels
