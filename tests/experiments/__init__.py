"""Shared helpers of the experiment tests: the real command line, in a subprocess."""

import subprocess
import sys


def cli(*args, timeout=900):
    """Run ``drivediff ARGS`` (the installed CLI module) and return the completed process."""
    return subprocess.run([sys.executable, "-m", "drivediff.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def quick_run(tmp_path_factory, experiment: str):
    """A fresh ``drivediff experiment EXPERIMENT --quick`` run folder (asserting it succeeded)."""
    out = tmp_path_factory.mktemp(experiment)
    r = cli("experiment", experiment, "--quick", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    return out
