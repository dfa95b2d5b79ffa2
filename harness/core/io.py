"""Result files: written whole or not at all, readable by the user's group, strict JSON.

Every file the harness leaves for a person or another tool goes through ``atomic_write_text``
(temp file in the same folder + fsync + rename): a reader sees the old file or the new one,
never half of one. ``to_jsonable`` is the one JSON sanitiser: numpy scalars and arrays to
Python, paths to strings, NaN and infinities to null (strict JSON: a missing interval is null).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the mode an ordinary open() would (0666 & ~umask),
        # so colleagues sharing a results directory can read it.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def to_jsonable(o: Any) -> Any:
    """Plain Python for json.dumps(allow_nan=False): see the module docstring."""
    if isinstance(o, dict):
        return {str(k): to_jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [to_jsonable(v) for v in o]
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist") and not isinstance(o, str | bytes):  # numpy arrays and scalars, torch tensors
        return to_jsonable(o.tolist())
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def dumps(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Strict JSON, written atomically."""
    atomic_write_text(path, dumps(obj) + "\n")
    return Path(path)
