"""Files that are never half-written: atomic writes for models, JSON reports and benchmark records.

A run killed mid-write must leave the previous file (or none), never a truncated one that a reader
takes for a finished checkpoint, report or benchmark cell.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never part of one.

    The bytes go to a hidden temporary file in the same directory, are flushed to disk, and the file
    is renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows). Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def json_default(value: Any) -> Any:
    """``json.dumps`` ``default=`` for NumPy scalars and arrays (what metrics and records hold)."""
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: str | os.PathLike, data: Any, indent: int = 2) -> None:
    """Write ``data`` as JSON (NumPy values included) with :func:`atomic_write`."""
    atomic_write(path, json.dumps(data, indent=indent, default=json_default).encode())


def save_model(model: Any, path: str | os.PathLike) -> None:
    """``model.save`` (any SB3 algorithm) to ``path`` with :func:`atomic_write`; ``path`` is used as given."""
    buffer = io.BytesIO()
    model.save(buffer)
    atomic_write(path, buffer.getvalue())
