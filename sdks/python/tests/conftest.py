"""Fixtures: a real ``switchboard serve`` for the tests that need one
(``SWITCHBOARD_BIN`` names the binary; without it they are skipped)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

TOKEN = "python-sdk-test-token-0123456789"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def server() -> Iterator[str]:
    binary = os.environ.get("SWITCHBOARD_BIN")
    if not binary:
        pytest.skip("SWITCHBOARD_BIN is not set")
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.Popen(
            [binary, "serve", "--data-dir", d, "--listen", "127.0.0.1:0", "--token", TOKEN, "--lease-ms", "2000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        assert line.startswith("switchboard listening on "), line
        try:
            yield line.removeprefix("switchboard listening on ")
        finally:
            p.terminate()
            p.wait(timeout=30)
