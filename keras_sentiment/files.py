"""Files written whole or not at all, and the kill points that prove it.

Every file a run or an export writes goes through a temporary sibling and a rename, so a kill
at any moment leaves either the old file or the new one, never a truncated file that reads as
valid. `kill_point` is the test hook that kills the process at a named place.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any


def save_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically, so a crash never leaves a truncated file that reads as valid."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write a file through a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a server run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_KILL_HITS: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Test hook: SIGKILL this process here when KERAS_SENTIMENT_KILL_AT is `name[@N]`."""
    point, _, nth = os.environ.get("KERAS_SENTIMENT_KILL_AT", "").partition("@")
    if point == name:
        _KILL_HITS[name] = _KILL_HITS.get(name, 0) + 1
        if _KILL_HITS[name] >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def remove(path: Path) -> None:
    """Remove a file or a folder tree, if it is there."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
