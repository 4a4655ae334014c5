"""Where runs and exports live, and their records.

`runs/NAME/VERSION/` holds a run, `saved_models/NAME/VERSION/` its export: integer version
folders, TF Serving's rule, shared by both so a run and its export have one number.
"""

from __future__ import annotations

import json
from pathlib import Path


def versions(base: str | Path) -> list[int]:
    """The integer folders under `base`, ascending: TF Serving's versions, or a name's runs."""
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def read_metadata(version_dir: Path) -> dict | None:
    """A version's metadata.json, its name/version/path taken from where it lies; None if bad."""
    try:
        meta = json.loads((version_dir / "assets.extra" / "metadata.json").read_text("utf-8"))
    except (OSError, ValueError):  # ValueError covers bad JSON and bad UTF-8
        return None
    if not isinstance(meta, dict):
        return None
    # A copied or renamed folder is served under its folder name, so that is the truth.
    version_dir = Path(version_dir)
    return {
        **meta,
        "name": version_dir.parent.name,
        "version": int(version_dir.name),
        "path": str(version_dir),
    }


def recorded_classes(output_dir: str | Path, runs_dir: str | Path, name: str) -> dict[str, list]:
    """The classes each earlier model of `name` was trained on, by where it lies: exported
    versions (their metadata) and finished runs (their summary). Unreadable ones are left out.
    """
    found = {}
    for base, record in ((Path(output_dir) / name, "assets.extra/metadata.json"),
                         (Path(runs_dir) / name, "summary.json")):  # fmt: skip
        for version in versions(base):
            try:
                names = json.loads((base / str(version) / record).read_text("utf-8"))["class_names"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            found[str(base / str(version))] = [str(n) for n in names]
    return found
