"""Test isolation: no hub downloads, a throw-away TORCH_HOME, and a per-session
KLSC_CACHE (so a test run starts from nothing unless KLSC_CACHE is set by CI)."""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="klsc-torch-home-")
os.environ.setdefault("KLSC_CACHE", tempfile.mkdtemp(prefix="klsc-cache-"))
