"""Scale-out: a sweep gives the same rows on every backend and worker count, survives killed workers and
resumes after an interruption; collection shards do not depend on the workers; DDP training under torchrun
follows the 1-process loss curve and only rank 0 writes."""

import csv
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from drivediff.cli import main as cli_main
from drivediff.errors import DrivediffError
from drivediff.experiments import sweep_demo
from drivediff.experiments.bench_scale import torchrun_train_command
from drivediff.experiments.collect_parallel import collect_parallel
from drivediff.experiments.runner import cell_seed, load_cell, run_cells
from drivediff.planner.data import WINDOW_KEYS, collect

# 3 cells of 2 episodes, 100 steps each: real simulator runs of a few tenths of a second
CFG = sweep_demo.SweepDemoConfig(scenarios=("merge", "intersection", "roundabout"), blocks=1, worlds_per_cell=2,
                                 steps=100, seed=5)


def sweep(out: Path, backend="local", workers=None, cfg=CFG, **kw):
    return sweep_demo.main(cfg, out, backend=backend, workers=workers, **kw)


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance (2 CPUs) for the module: Ray takes seconds to start."""
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("ray is not installed (pip install 'drivediff[ray]'); the ray backend is not tested")
    from drivediff.experiments.ray_backend import connect

    started = connect(None, 2)
    yield
    if started:
        import ray

        ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sweep on one local worker."""
    return sweep(tmp_path_factory.mktemp("ref"), "local", 1)


def test_rows_do_not_depend_on_the_number_of_workers(reference, tmp_path):
    assert len(reference) == 3 * 2
    for r in reference:  # seeded from the run seed and the cell key, whoever runs the cell
        assert r["seed"] == cell_seed(CFG.seed, r["cell"]) + r["episode"]
        assert r["steps"] == 100 and r["vehicles_total"] > 0
    assert len({r["seed"] for r in reference}) == 6
    assert sweep(tmp_path / "local2", "local", 2) == reference


def test_rows_on_ray_are_those_of_local_workers(reference, tmp_path, ray_session):
    assert sweep(tmp_path / "ray", "ray") == reference


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_killed_worker_is_retried_and_every_cell_is_stored_once(backend, reference, tmp_path, request):
    if backend == "ray":
        request.getfixturevalue("ray_session")
    marker = tmp_path / "crashed"
    cfg = dataclasses.replace(CFG, crash_marker=str(marker))
    rows = sweep(tmp_path / "run", backend, 2, cfg=cfg)
    # every cell's first attempt killed its worker (SIGKILL), the retry ran it
    keys = sorted(c.key for c in sweep_demo.cells(CFG))
    assert sorted(p.name for p in tmp_path.glob("crashed-*")) == [f"crashed-{k}" for k in keys]
    assert sorted(p.name for p in (tmp_path / "run" / "cells").iterdir()) == [f"{k}.json" for k in keys]
    assert rows == reference


def test_a_worker_that_always_dies_stops_the_run_with_a_clear_error(tmp_path):
    cells = sweep_demo.cells(dataclasses.replace(CFG, scenarios=("merge",), blocks=1))
    with pytest.raises(DrivediffError, match="merge-0: its worker process died 2 times"):
        run_cells(tmp_path / "run", cells, _always_crash, 0, workers=1, max_retries=1)
    assert load_cell(tmp_path / "run", "merge-0") is None


def _always_crash(cell, seed):  # module-level: workers import it from this module
    os.kill(os.getpid(), signal.SIGKILL)


def test_an_interrupted_run_resumes_with_the_unfinished_cells_only(reference, tmp_path):
    class Interrupt(Exception):
        pass

    def stop_after_two(done, total, key):
        if done == 2:
            raise Interrupt  # as Ctrl-C would, in the middle of the run

    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        sweep(run, "local", 2, progress=stop_after_two)
    finished = sorted(run.glob("cells/*.json"))
    assert len(finished) == 2
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    calls = []
    rows = sweep(run, "local", 2, progress=lambda *a: calls.append(a))
    assert calls[0] == (2, 3, "resuming") and [c[0] for c in calls[1:]] == [3]  # one cell redone
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished cells untouched
    assert rows == reference
    # a damaged result file is redone too
    (run / "cells" / "merge-0.json").write_text("{not json")
    assert load_cell(run, "merge-0") is None
    assert sweep(run, "local", 1) == reference


def test_ray_backend_without_ray_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(DrivediffError, match=r"pip install 'drivediff\[ray\]'"):
        sweep(tmp_path / "run", "ray")
    assert not (tmp_path / "run" / "cells").exists()
    assert cli_main(["collect", "merge", "--out", str(tmp_path / "d"), "--backend", "ray"]) == 2
    assert "pip install 'drivediff[ray]'" in capsys.readouterr().err
    with pytest.raises(DrivediffError, match="unknown backend"):
        sweep(tmp_path / "run", "slurm")


def test_collected_shards_do_not_depend_on_the_workers(tmp_path):
    serial = collect(["merge"], 2, tmp_path / "serial", num_worlds=2)  # in this process, no backend
    assert cli_main(["collect", "merge", "--episodes", "2", "--worlds", "2", "--out", str(tmp_path / "two"),
                     "--workers", "2"]) == 0
    one = collect_parallel(["merge"], 2, tmp_path / "one", num_worlds=2, workers=1)
    assert [p.name for p in serial] == [p.name for p in one] == ["merge-00000.npz", "merge-00001.npz"]
    for p in serial:
        with np.load(p) as a, np.load(tmp_path / "one" / p.name) as b, np.load(tmp_path / "two" / p.name) as c:
            assert sorted(a.files) == sorted(b.files) == sorted(c.files)
            assert set(WINDOW_KEYS) <= set(a.files)
            for k in a.files:
                assert a[k].dtype == b[k].dtype == c[k].dtype
                assert a[k].tobytes() == b[k].tobytes() == c[k].tobytes(), k
    stamp = (tmp_path / "two" / "merge-00000.npz").stat().st_mtime_ns  # resumable: existing shards are kept
    calls = []
    collect_parallel(["merge"], 2, tmp_path / "two", num_worlds=2, workers=2, progress=lambda *a: calls.append(a))
    assert (tmp_path / "two" / "merge-00000.npz").stat().st_mtime_ns == stamp and calls == [(2, 2, "resuming")]
    # ... unless made with other settings: another seed redoes them, as a fresh collection with it would
    calls.clear()
    collect_parallel(["merge"], 2, tmp_path / "two", seed=1, num_worlds=2, progress=lambda *a: calls.append(a))
    assert calls[0] == (0, 2, "0 reused, 2 recomputed: made with other settings")
    fresh = collect(["merge"], 1, tmp_path / "seed1", seed=1, num_worlds=2)[0]
    with np.load(fresh) as a, np.load(tmp_path / "two" / fresh.name) as b:
        assert int(b["meta_seed"]) == 1 and all(a[k].tobytes() == b[k].tobytes() for k in a.files)


# Runs `drivediff train` and records, per rank, every file opened for writing under the output folder
# (a Python audit hook: it watches the real writes, nothing in drivediff is replaced).
AUDITED_TRAIN = textwrap.dedent("""
    import os, sys

    watch, log = os.environ["AUDIT_WATCH"], os.environ["AUDIT_LOG"] + "." + os.environ.get("RANK", "0")

    def hook(event, args):
        if event != "open" or not isinstance(args[0], (str, bytes)):
            return
        path, mode, flags = os.fsdecode(args[0]), args[1], args[2] or 0
        writing = (mode is not None and any(c in mode for c in "wax+")) or flags & (os.O_WRONLY | os.O_RDWR)
        if writing and path.startswith(watch):
            with open(log, "a") as fh:
                fh.write(path + "\\n")

    sys.addaudithook(hook)
    from drivediff.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _train(nproc, data, out, steps, audit=None):
    cmd = torchrun_train_command(nproc, data, out, "--steps", str(steps), "--batch-size", "32", "--warmup", "10",
                                 "--lr", "3e-3", "--minutes", "10")
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    if audit is not None:
        i = cmd.index("-m", cmd.index("--nproc_per_node=" + str(nproc)))
        cmd[i:i + 2] = [str(audit)]  # the audited script in place of -m drivediff.cli
        env.update(AUDIT_WATCH=str(out.parent), AUDIT_LOG=str(out.parent.parent / f"writes-{out.parent.name}"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(str(out) + ".loss.csv") as fh:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(fh)], proc.stdout


def test_ddp_training_follows_the_single_process_curve_and_only_rank0_writes(tmp_path):
    data = tmp_path / "data"
    collect(["merge"], 2, data, num_worlds=2)
    audit = tmp_path / "audited_train.py"
    audit.write_text(AUDITED_TRAIN)
    one, _ = _train(1, data, tmp_path / "one" / "p.pt", 150)
    two, stdout = _train(2, data, tmp_path / "two" / "p.pt", 150, audit=audit)
    assert [s for s, _ in one] == [s for s, _ in two] == [1, 25, 50, 75, 100, 125, 150]
    # the same global batch (32 = 2 x 16) and schedule: the curves agree within batch noise (the logged
    # value is a running mean that still remembers its noisy first step)
    assert one[-1][1] < 0.5 * one[0][1] and two[-1][1] < 0.5 * two[0][1]
    assert abs(two[-1][1] - one[-1][1]) < 0.25 * one[-1][1]
    assert stdout.count("trained 150 steps") == 1  # rank 0 reports
    writes = {p.name: p.read_text().split() for p in tmp_path.glob("writes-two.*")}
    assert set(writes) == {"writes-two.0"} and writes["writes-two.0"]  # rank 1 opened nothing for writing
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["p.pt", "p.pt.loss.csv", "p.pt.loss.png",
                                                                     "p.pt.train-state.pt"]
    # resuming under DDP continues from the saved step
    more, _ = _train(2, data, tmp_path / "two" / "p.pt", 175)
    assert [s for s, _ in more] == [1, 25, 50, 75, 100, 125, 150, 175] and more[:7] == two
