"""Services and jobs refer to each other; each module must import first without a cycle."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "minipaas.services.deployments.records",
        "minipaas.services.lifecycle",
        "minipaas.worker.jobs",
        "minipaas.worker.main",
        "minipaas.api.app",
    ],
)
def test_module_imports_first(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
