"""The manifest of a results folder: which cells a grid has and every submission of them.

`<out>/manifest.json` is written by `ppodd submit` (`cluster.submission`) and read by `status`,
`summarize` and the next `submit`. It is replaced atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ppodd.atomic import write_json
from ppodd.errors import ConfigError

MANIFEST = "manifest.json"


def read_manifest(out: Path) -> dict:
    """The manifest of a results folder (empty when there is none); ConfigError when unreadable."""
    path = Path(out) / MANIFEST
    if not path.exists():
        return {"format": "ppodd-manifest", "format_version": 1, "cells": {}, "submissions": []}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{path}: not a readable ppodd manifest (JSON); move it away to start a new one") from None
    if data.get("format") != "ppodd-manifest":
        raise ConfigError(f"{path}: not a ppodd manifest (format {data.get('format')!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or version > 1:
        raise ConfigError(f"{path}: manifest format_version {version!r} is not one this ppodd reads (1); "
                          "upgrade ppodd or submit into another folder")
    return data


def write_manifest(out: Path, manifest: dict) -> Path:
    """Replace `<out>/manifest.json` atomically, so a reader never sees half of it."""
    return write_json(Path(out) / MANIFEST, manifest)
