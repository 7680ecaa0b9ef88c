"""The import layers in pyproject.toml hold (import-linter reads function-local imports too): libraries know
neither the registry nor the stages, and the foundations import nothing above them."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def test_layers_point_down():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e .[dev])")
    done = subprocess.run([lint], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
