"""The CI=true rule itself: a skip for a missing dependency fails the run; a machine-dependent one may skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SAMPLE = '''
import pytest

@pytest.mark.skipif(True, reason="mosquitto is not installed")
def test_needs_a_broker():
    pass

def test_needs_data():
    pytest.skip("nut-ddl data not found")

@pytest.mark.machine_dependent
def test_only_without_i2c():
    pytest.skip("this machine has an I2C bus")
'''


def run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(Path(__file__).parent)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "ci_strict", "-q", "-rfs", "-p", "no:cacheprovider",
                           str(tmp_path / "test_sample.py")], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env=env)


def test_under_ci_a_missing_dependency_fails_the_run(tmp_path):
    r = run(tmp_path, "true")
    assert r.returncode == 1, r.stdout
    assert "1 failed, 1 skipped" in r.stdout and "1 error" in r.stdout  # a skipif fails in its setup
    assert "CI=true, and this test was skipped: mosquitto is not installed" in r.stdout
    assert "CI=true, and this test was skipped: nut-ddl data not found" in r.stdout


def test_outside_ci_it_is_a_skip(tmp_path):
    r = run(tmp_path, None)
    assert r.returncode == 0, r.stdout
    assert "3 skipped" in r.stdout
