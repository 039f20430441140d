"""Side environments for tests: an older release of a library installed with ``pip install --target``
into a folder that a subprocess puts first on PYTHONPATH (torch, numpy and the rest stay as installed).

Used by the MERT reference (MERT's own code needs transformers < 4.48) and by the dependency-floor
tests. Each folder is kept under the temporary directory and reused by later runs; a test skips,
saying why, when the package registry cannot be reached.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

TRANSFORMERS_COMPANIONS = ("tokenizers>=0.21,<0.22", "huggingface_hub>=0.24,<1.0")
"""What transformers 4.47 checks at import (the installed 5.x needs newer ones)."""


def install(name: str, pins: list[str], why: str) -> Path:
    """``pins`` installed (no dependencies) into a reusable folder named ``name``; skips the test when they
    cannot be installed, naming ``why`` it wanted them."""
    target = Path(tempfile.gettempdir()) / f"featpipe-test-{name}"
    if (target / ".complete").is_file():
        return target
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--target",
        str(target),
        *pins,
    ]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"{why}: could not install {' '.join(pins)} ({type(exc).__name__})")
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"{why}: {' '.join(pins)} did not install from the package registry ({last[:200]})")
    (target / ".complete").write_text("ok")
    return target


def transformers(version: str, why: str) -> Path:
    """transformers ``version`` (4.4x) with the tokenizers and hub releases it accepts."""
    return install(f"transformers-{version}", [f"transformers=={version}", *TRANSFORMERS_COMPANIONS], why)
