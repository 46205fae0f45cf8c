"""pytest fixtures for the hookgate end-to-end suite. HOOKGATE_BIN names the binary under test
(scripts/run-e2e.sh sets it); each test gets its own process, port and directories in tmp_path."""

import os
import pathlib

import pytest

import hookgate as hgmod

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def hookgate_bin():
    b = os.environ.get("HOOKGATE_BIN") or str(REPO / "build" / "hookgate")
    p = pathlib.Path(b)
    if not p.is_file() or not os.access(p, os.X_OK):
        pytest.fail(f"hookgate binary not found or not executable: {b} (set HOOKGATE_BIN)")
    return str(p.resolve())


@pytest.fixture
def make_hg(tmp_path, hookgate_bin):
    """Factory: make_hg(overrides={section: {key: value}}, env={...}, start=True, name=...).
    On teardown every instance still running gets SIGTERM and must exit 0, and no instance may
    have printed a sanitizer report."""
    instances = []

    def factory(overrides=None, env=None, start=True, name=None, port=None, admin_port=None):
        name = name or f"hg{len(instances)}"
        h = hgmod.Hookgate(hookgate_bin, tmp_path / name, overrides=overrides, env=env, port=port,
                           admin_port=admin_port)
        instances.append(h)
        if start:
            h.start()
        return h

    yield factory

    problems = []
    for h in instances:
        if h.running():
            try:
                rc = h.stop()
            except AssertionError as e:
                problems.append(f"{h.dir.name}: {e}")
                continue
            if rc != 0:
                problems.append(f"{h.dir.name}: exit code {rc} after SIGTERM; stderr tail:\n"
                                + h.stderr_tail())
        rep = h.sanitizer_report()
        if rep:
            problems.append(f"{h.dir.name}: sanitizer report:\n{rep}")
    if problems:
        pytest.fail("hookgate teardown: " + "\n\n".join(problems), pytrace=False)


@pytest.fixture
def hg(make_hg):
    """A running hookgate with the default test config (2 workers, tenant acme)."""
    return make_hg()
