"""Locations of the repository's data folders (assets, catalogs, seed demos)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = Path(os.environ.get("DEXFLY_ASSETS_DIR", REPO_ROOT / "assets"))
ROBOTS_DIR = ASSETS_DIR / "robots"
CATALOGS_DIR = ASSETS_DIR / "catalogs"
DEMOS_DIR = ASSETS_DIR / "demos"
