"""Under CI=true a skipped test fails: a missing NUT binary, mosquitto, chromium or data set must
break the run, not quietly shrink it.  A test whose skip depends on the machine itself (not on
something CI installs) says so with @pytest.mark.machine_dependent."""

from __future__ import annotations

import os

import pytest


def ci_strict() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and ci_strict() and item.get_closest_marker("machine_dependent") is None \
            and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true, and this test was skipped: {reason.removeprefix('Skipped: ')}"
