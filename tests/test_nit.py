"""NUT's own integration test suite (tests/NIT/nit.sh of NUT v2.8.0) with `nutups upsd` in
place of upsd: it must end with OVERALL: PASSED=10 FAILED=0, as the real upsd 2.8.0 does."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest
from nutprocs import HAVE_REAL_NUT, free_port, nut_user

REPO = Path(__file__).resolve().parents[1]
# nit.sh of NUT v2.8.0 is kept in the repository (tests/data/nut-nit/README.md); $NUTUPS_NIT may name another
NIT = Path(os.environ.get("NUTUPS_NIT", REPO / "tests" / "data" / "nut-nit" / "nit.sh"))
SYSTEM_PYTHON = Path("/usr/bin/python3")  # user nut must be able to run it (not a pyenv under /root)
# the runtime dependencies of pyproject.toml, installed once per version of this list
DEPENDENCIES = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
IN_CI = os.environ.get("CI") == "true"
# the subprocesses' own limits; the test may take their sum (the first run builds the venv)
VENV_TIMEOUT, PIP_TIMEOUT, NIT_TIMEOUT = 300, 600, 600
pytestmark = pytest.mark.realnut


def _missing() -> str | None:
    if not HAVE_REAL_NUT:
        return "NUT 2.8.0 binaries (nut-server, nut-client)"
    if not NIT.exists():
        return f"NUT's nit.sh ({NIT})"
    if os.geteuid() != 0 or nut_user() is None or not shutil.which("su"):
        return "root, su and user nut (nit.sh runs NUT's drivers as an unprivileged user)"
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} (with venv)"
    return None


def _nit_venv() -> Path:
    """A venv on the system Python with nutups' dependencies, which user nut can execute;
    cached by the dependency list, since building it takes a while. It is built aside and
    renamed into place, so that two test runs at once never see half of one."""
    key = hashlib.sha256("\n".join(DEPENDENCIES).encode()).hexdigest()[:12]
    venv = Path(tempfile.gettempdir()) / f"nutups-nit-venv-{key}"
    if venv.exists():
        return venv
    build = Path(tempfile.mkdtemp(prefix=f"{venv.name}-build-"))
    try:
        subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(build)], check=True, timeout=VENV_TIMEOUT)
        subprocess.run([str(build / "bin" / "pip"), "install", "-q", *DEPENDENCIES], check=True, timeout=PIP_TIMEOUT)
        # only bin/python is used (a symlink; the venv is found from pyvenv.cfg beside bin/), so
        # the venv works under its final name; pip's own scripts would not, and are not used
        subprocess.run(["chmod", "-R", "a+rX", str(build)], check=True)
        try:
            build.rename(venv)
        except OSError:  # another run got there first: use that one
            pass
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return venv


@pytest.mark.timeout(VENV_TIMEOUT + PIP_TIMEOUT + NIT_TIMEOUT + 60)
def test_nit_passes_with_nutups_upsd():
    missing = _missing()
    if missing:
        if IN_CI:
            pytest.fail(f"NUT's integration suite cannot run: needs {missing}")
        pytest.skip(f"needs {missing}")
    venv = _nit_venv()
    work = Path(tempfile.mkdtemp(prefix="nit.", dir="/tmp"))  # short: the driver sockets are AF_UNIX
    try:
        shutil.copy(NIT, work / "nit.sh")
        (work / "shim").mkdir()
        shim = work / "shim" / "upsd"
        shim.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{venv}/bin/python" -m nutups.cli upsd "$@"\n')
        shim.chmod(0o755)
        uid, gid = nut_user()  # type: ignore[misc]
        for p in [work, *work.rglob("*")]:
            os.chown(p, uid, gid)
        check = subprocess.run(["su", "nut", "-s", "/bin/sh", "-c", f'test -r "{REPO}/nutups/upsd.py"'])
        assert check.returncode == 0, f"user nut cannot read {REPO}: the repository must be world-readable"
        env_path = f"{work}/shim:/lib/nut:/usr/bin:/bin"
        run = subprocess.run(
            ["su", "nut", "-s", "/bin/sh", "-c",
             f"cd {work} && PATH={env_path} NUT_PORT={free_port()} sh ./nit.sh"],
            capture_output=True, text=True, timeout=NIT_TIMEOUT)
        out = run.stdout + run.stderr
        assert "OVERALL: PASSED=10 FAILED=0" in out, out[-4000:]
        assert "Traceback" not in out, out[-4000:]
    finally:
        shutil.rmtree(work, ignore_errors=True)
