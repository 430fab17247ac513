"""The ``drivediff`` command.

    drivediff scenarios                          list the scenario catalog
    drivediff simulate SCENARIO [options]        run a scenario, print a summary, optionally write a log
    drivediff bench sim [--json]                 simulator speed, side by side with highway-env
    drivediff bench sweep | train                sweep throughput per backend, DDP training speed
    drivediff demo                               the main job on the default scenario

Errors in user input (scenario files, options, logs) print a message and exit with status 2, without a
traceback.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from drivediff.errors import DrivediffError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="drivediff: multi-agent driving simulation and a CTDE diffusion planner.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (printed as tables; --json for machines).")
app.add_typer(bench_app, name="bench")
exp_app = typer.Typer(no_args_is_help=True, help="Experiments: each writes a run folder (config, results, report).")
app.add_typer(exp_app, name="experiment")
# Piped into a file or another program, rich would lay tables out for 80 columns and cut wide cells ("1,068,3…").
# Results print without rich markup: "[m]" and "[ms]" in a table are units, not styles
PIPE_WIDTH = 160
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH, markup=False)
err_console = Console(stderr=True, soft_wrap=True)

DEFAULT_SCENARIO = "merge"


def _fail(msg: str, code: int = 2):
    err_console.print(f"[bold red]error:[/] {msg}", highlight=False, markup=True)
    raise typer.Exit(code)


@app.command("scenarios")
def scenarios_cmd():
    """List the scenario catalog."""
    from drivediff.scenarios import list_catalog

    table = Table(title="drivediff scenario catalog")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, desc in list_catalog():
        table.add_row(name, desc)
    console.print(table)


@app.command("simulate")
def simulate_cmd(
    scenario: str = typer.Argument(..., help="catalog name or path to a scenario YAML file"),
    seed: int = typer.Option(0, min=0, help="random seed"),
    steps: int = typer.Option(None, min=1, help="number of steps (default: the scenario's duration)"),
    duration: float = typer.Option(None, help="simulated time [s], positive (alternative to --steps)"),
    log: Path = typer.Option(None, help="write the episode log (.npz) here"),
    set_: list[str] = typer.Option([], "--set", help="override a scenario field, e.g. controlled.count=4"),
    render: bool = typer.Option(False, help="show the run live in a window"),
    policy: str = typer.Option("idm", help="who drives the controlled vehicles: idm | diffusion"),
    checkpoint: Path = typer.Option(None, help="planner checkpoint (default: the shipped one)"),
    # the planner's options default to None so that giving one with --policy idm is caught (defaults below)
    mode: str = typer.Option(None, help="diffusion planner: decentralized (default) | centralized | communication"),
    sampling_steps: int = typer.Option(None, min=1, help="diffusion planner: denoising steps (default 10)"),
    candidates: int = typer.Option(None, min=1, help="diffusion planner: candidate plans per query (default 4)"),
    guidance: bool = typer.Option(None, help="diffusion planner: safety guidance while denoising, all layers "
                                             "(default: on)"),
    guidance_scale: float = typer.Option(None, min=0.0, help="diffusion planner: guidance gradient scale (default 1)"),
):
    """Run a scenario and print a summary (controlled vehicles driven by --policy)."""
    from drivediff.scenarios import parse_set_options
    from drivediff.sim import World
    from drivediff.sim.summary import episode_summary

    if steps is not None and duration is not None:
        _fail("give --steps or --duration, not both")
    if duration is not None and not (math.isfinite(duration) and duration > 0.0):
        _fail(f"--duration must be a positive number of seconds, got {duration}")
    planner_options = {"--checkpoint": checkpoint, "--mode": mode, "--sampling-steps": sampling_steps,
                       "--candidates": candidates, "--guidance/--no-guidance": guidance,
                       "--guidance-scale": guidance_scale}
    if policy != "diffusion" and any(v is not None for v in planner_options.values()):
        given = ", ".join(k for k, v in planner_options.items() if v is not None)
        _fail(f"{given}: options of the diffusion planner, which drives only with --policy diffusion")
    mode = "decentralized" if mode is None else mode
    sampling_steps = 10 if sampling_steps is None else sampling_steps
    candidates = 4 if candidates is None else candidates
    guidance = True if guidance is None else guidance
    guidance_scale = 1.0 if guidance_scale is None else guidance_scale
    if log is not None and log.is_dir():
        _fail(f"--log {log} is a folder; give a file name, e.g. {log / 'episode.npz'}")
    world = World(scenario, num_worlds=1, overrides=parse_set_options(set_))
    if log is not None:
        from drivediff.io import make_dirs

        make_dirs(log.parent)  # before the run, not after it (and after the scenario proved valid)
    n = steps if steps is not None else (int(round(duration / world.dt)) if duration is not None
                                          else world.scenario.num_steps)
    n = max(n, 1)
    world.reset(seed=seed)
    if policy == "diffusion" and not world.state.controlled[0].any():
        _fail(f"{world.config.name} has no controlled vehicles for the planner to drive "
              "(add some with --set controlled.count=N)")
    pol = _make_policy(policy, checkpoint, mode, sampling_steps, candidates, record=log is not None, seed=seed,
                       guidance_scale=guidance_scale if guidance else None)
    initial = world.snapshot(0)
    t0 = time.perf_counter()
    if render:
        rec = _run_rendered(world, n, pol)
    elif pol is not None:
        from drivediff.agents.rollout import run_policy

        pol.reset(world)
        rec = _with_progress(n, lambda cb: run_policy(world, pol, n, progress=cb))
    else:
        rec = _with_progress(n, lambda cb: world.run(n, record=True, progress=cb))
    wall = time.perf_counter() - t0
    summary = episode_summary({k: rec[k][0] for k in rec if k != "t"}, world.dt)
    summary.update(scenario=world.config.name, seed=seed, wall_s=wall, policy=policy,
                   steps_per_s=n / wall if wall > 0 else float("inf"))
    if pol is not None and getattr(pol, "latencies", None):
        lat = np.asarray(pol.latencies) * 1000
        summary["planning_ms"] = (float(lat.mean()), float(np.percentile(lat, 95)))
    if log is not None:
        from drivediff.agents.rollout import write_episode_log

        meta = dict(policy=policy, mode=mode if policy == "diffusion" else None,
                    guidance=guidance_scale if policy == "diffusion" and guidance else None)
        try:
            path = write_episode_log(log, world, pol, rec, initial, 0, meta)
        except OSError as e:
            _fail(f"cannot write the log to {log}: {e.strerror or e}")
        summary["log"] = str(path)
    _print_summary(summary)


def _make_policy(name, checkpoint, mode, sampling_steps, candidates, record, seed, guidance_scale=None):
    if name == "idm":
        return None  # the controlled vehicles keep their in-kernel IDM/MOBIL (fastest: World.run)
    from drivediff.agents import make_policy
    from drivediff.planner.sampler import SamplerConfig

    kw = {}
    if name == "diffusion" and guidance_scale is not None:
        from drivediff.planner.guidance import GuidanceConfig

        kw["guidance"] = GuidanceConfig(scale=guidance_scale)
    return make_policy(name, checkpoint=checkpoint, mode=mode, record=record, seed=seed,
                       sampler=SamplerConfig(steps=sampling_steps, candidates=candidates), **kw)


def _with_progress(n: int, run):
    from rich.progress import Progress

    with Progress(console=err_console, transient=True) as prog:
        task = prog.add_task("simulating", total=n)
        return run(lambda done: prog.update(task, completed=done))


def _run_rendered(world, n: int, policy=None) -> dict:
    from drivediff.render.live import run_live  # pygame only when asked for

    if policy is not None:
        policy.reset(world)
        return run_live(world, n, policy=policy)
    return run_live(world, n)


def _print_summary(summary: dict) -> None:
    table = Table(title=f"{summary['scenario']} (seed {summary['seed']}, policy {summary['policy']})",
                  show_header=False)
    rows = [
        ("steps", f"{summary['steps']} ({summary['duration_s']:.1f} s simulated)"),
        ("vehicles", f"{summary['vehicles_max']} at most at once, {summary['vehicles_total']} in total"),
        ("collisions", f"{summary['collisions']} (controlled vehicles: {summary['controlled_collisions']})"),
        ("off-road events", str(summary["offroad_events"])),
        ("mean speed", f"{summary['mean_speed']:.2f} m/s"),
        ("distance driven", f"{summary['distance_km']:.2f} vehicle-km"),
        ("wall time", f"{summary['wall_s']:.3f} s ({summary['steps_per_s']:.0f} steps/s)"),
    ]
    if "planning_ms" in summary:
        mean, p95 = summary["planning_ms"]
        rows.append(("planning latency", f"mean {mean:.1f} ms, p95 {p95:.1f} ms per replanning"))
    if "log" in summary:
        rows.append(("log", summary["log"]))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


@app.command("collect")
def collect_cmd(
    scenarios: list[str] = typer.Argument(None, help="catalog names or files (default: the planner's training set)"),
    episodes: int = typer.Option(10, min=1, help="episodes per scenario (each runs --worlds worlds)"),
    out: Path = typer.Option(..., help="output folder for the shards"),
    seed: int = typer.Option(0, min=0),
    worlds: int = typer.Option(4, min=1, help="worlds per episode"),
    backend: BackendOpt = "local",
    workers: WorkersOpt = None,
    address: AddressOpt = None,
):
    """Roll out expert traffic and write training windows (resumable: shards already in OUT that were made
    with the same settings are kept, others redone).

    One task per (scenario, episode) shard; the shards are the same whatever --backend and --workers."""
    from drivediff.experiments.collect_parallel import collect_parallel
    from drivediff.planner.data import DEFAULT_SCENARIOS
    from drivediff.scenarios import get_scenario

    names = list(scenarios) if scenarios else list(DEFAULT_SCENARIOS)
    for name in names:
        get_scenario(name)  # fail early on a bad name or file
    from drivediff.io import make_dirs

    make_dirs(out)
    scale = _scale_options(backend, workers, address)
    prog, update = _experiment_progress("shards")
    with prog:
        paths = collect_parallel(names, episodes, out, seed=seed, num_worlds=worlds, progress=update, **scale)
    import numpy as _np

    count = 0
    for p in paths:
        with _np.load(p) as z:
            count += len(z["fut_ctrl"])
    console.print(f"{len(paths)} shards, {count} training windows in {out}")


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., help="folder of shards written by `drivediff collect`"),
    out: Path = typer.Option(..., help="checkpoint to write (resumes from OUT.train-state.pt if present)"),
    device: str = typer.Option("auto", help="cpu | cuda | auto"),
    steps: int = typer.Option(6000, min=1, help="optimisation steps"),
    minutes: float = typer.Option(9.0, min=0.0, help="wall-clock budget (whichever ends first)"),
    batch_size: int = typer.Option(256, min=1),
    lr: float = typer.Option(1e-3, min=0.0),
    warmup: int = typer.Option(200, min=1, help="learning-rate warm-up steps"),
    seed: int = typer.Option(0, min=0),
    init: Path = typer.Option(None, help="fine-tune: start from this checkpoint's weights and normaliser"),
):
    """Train the diffusion planner (single process, or under torchrun for DDP).

    Data-parallel: torchrun --nproc_per_node N -m drivediff.cli train ... (--batch-size is the global batch)."""
    import contextlib

    from rich.progress import Progress

    from drivediff.io import make_dirs
    from drivediff.planner.data import shard_files
    from drivediff.planner.train import TrainConfig, _dist_info, pick_device, train

    tcfg = TrainConfig(steps=steps, minutes=minutes, batch_size=batch_size, lr=lr, warmup=warmup, seed=seed)
    # the errors a user can make, before the progress bar: data, device, where the checkpoint goes
    shard_files(data)
    pick_device(device)
    make_dirs(out.parent)
    rank0 = _dist_info()[0] == 0  # under torchrun only rank 0 shows progress and prints
    with Progress(console=err_console) if rank0 else contextlib.nullcontext() as prog:
        task = prog.add_task("training", total=steps) if rank0 else None
        res = train(data, out, tcfg=tcfg, device=device, init=init,
                    progress=lambda k, total, loss: prog.update(task, completed=k,
                                                                description=f"training (loss {loss:.4f})"))
    if res["rank"] == 0:
        console.print(f"trained {res['steps']} steps in {res['seconds']:.0f} s on {res['windows']} windows "
                      f"({res['parameters']} parameters), final loss {res['loss']:.4f} -> {res['checkpoint']}")


@bench_app.command("sim")
def bench_sim_cmd(
    json_out: bool = typer.Option(False, "--json", help="print machine-readable JSON only"),
    quick: bool = typer.Option(False, help="fewer steps (for smoke tests)"),
    highway_env: bool = typer.Option(True, help="include highway-env (if installed)"),
):
    """Simulator throughput: highway-v0 in highway-env and drivediff, batched worlds, large worlds."""
    from drivediff.experiments.bench import run_sim_bench

    results = run_sim_bench(quick=quick, with_highway_env=highway_env,
                            progress=None if json_out else err_console)
    from drivediff.experiments.bench import print_sim_bench

    _emit(results, print_sim_bench, json_out)


def _emit(results: dict, printer, json_out: bool) -> None:
    """A benchmark's results: JSON on stdout (--json) or its rich tables."""
    if json_out:
        print(json.dumps(results, indent=2))
    else:
        printer(results, console)


@bench_app.command("env")
def bench_env_cmd(
    json_out: bool = typer.Option(False, "--json", help="print machine-readable JSON only"),
    quick: bool = typer.Option(False, help="fewer steps (smoke test)"),
    highway_env: bool = typer.Option(True, help="include highway-env (if installed)"),
):
    """Environment throughput: highway-v0 (1 agent), 4-agent PettingZoo intersection, batched 256 x 4."""
    from drivediff.experiments.bench_env import print_env_bench, run_env_bench

    res = run_env_bench(quick=quick, with_highway_env=highway_env, progress=None if json_out else err_console)
    _emit(res, print_env_bench, json_out)


@bench_app.command("planner")
def bench_planner_cmd(
    json_out: bool = typer.Option(False, "--json", help="print machine-readable JSON only"),
    quick: bool = typer.Option(False, help="1 and 8 vehicles, a few cycles (smoke test)"),
    checkpoint: Path = typer.Option(None, help="planner checkpoint (default: the shipped one)"),
    candidates: int = typer.Option(4, min=1, help="candidate plans per query"),
):
    """Replanning latency of the diffusion planner for 1, 8, 32 vehicles and 5, 10 sampling steps."""
    from drivediff.experiments.bench_planner import print_planner_bench, run_planner_bench

    results = run_planner_bench(checkpoint, quick=quick, candidates=candidates)
    _emit(results, print_planner_bench, json_out)


def _checkpoint(path: Path | None) -> str | None:
    """A --checkpoint option checked before any work (None: the shipped planner)."""
    if path is not None and not path.is_file():
        raise DrivediffError(f"checkpoint {path} does not exist")
    return str(path) if path is not None else None


# Where the cells of a sweep run: the same three options on `collect` and every `experiment` command.
BackendOpt = Annotated[str, typer.Option(
    "--backend", help="local: worker processes on this machine | ray: Ray tasks (pip install 'drivediff\\[ray]')")]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", min=1, help="cells at once (local: worker processes, default 1; ray: default all CPUs)")]
AddressOpt = Annotated[str | None, typer.Option(
    "--address", envvar="RAY_ADDRESS", help="ray: an existing cluster (HOST:PORT or auto); default: start one here")]


def _scale_options(backend: str, workers: int | None, address: str | None) -> dict:
    """Check --backend/--workers/--address before any work; returns the keyword arguments of
    ``run_tasks`` (``backend``, ``workers``, ``address``)."""
    from drivediff.experiments.runner import check_backend

    check_backend(backend)  # an unknown backend, or ray not installed: a clean error now
    if backend == "ray" and address:
        os.environ["RAY_ADDRESS"] = address  # Ray's own variable: reaches experiments that take no address
    return {"backend": backend, "workers": workers, "address": address if backend == "ray" else None}


@bench_app.command("sweep")
def bench_sweep_cmd(
    experiment: str = typer.Option("demo", help="whose quick sweep: demo | planner | safety | platoon"),
    configs: str = typer.Option("local:1,local:2,ray", help="backends to time: local:N, ray or ray:N, comma-separated"),
    address: AddressOpt = None,
    checkpoint: Path = typer.Option(None, help="planner checkpoint for planner/safety (default: the shipped one)"),
    json_out: bool = typer.Option(False, "--json", help="print machine-readable JSON only"),
):
    """Sweep throughput (cells per minute) per backend and worker count, on one experiment's quick sweep."""
    from drivediff.experiments.bench_scale import parse_configs, print_sweep_bench, run_sweep_bench

    cfgs = parse_configs(configs)
    if any(b == "ray" for b, _ in cfgs):
        _scale_options("ray", None, address)
    res = run_sweep_bench(experiment, cfgs, address=address, checkpoint=str(checkpoint) if checkpoint else None,
                          progress=None if json_out else (lambda msg: err_console.print(msg, end="\r")))
    _emit(res, print_sweep_bench, json_out)


@bench_app.command("train")
def bench_train_cmd(
    procs: str = typer.Option("1,2", help="DDP process counts to time, comma-separated"),
    steps: int = typer.Option(60, min=2),
    batch_size: int = typer.Option(128, min=1, help="global batch (split across the processes)"),
    data: Path = typer.Option(None, help="shards to train on (default: a small merge collection)"),
    threads: int = typer.Option(None, min=1, help="torch threads per process (default: CPUs / processes)"),
    json_out: bool = typer.Option(False, "--json", help="print machine-readable JSON only"),
):
    """Training steps/s of `drivediff train` under torchrun with 1, 2, ... CPU processes (gloo)."""
    from drivediff.experiments.bench_scale import print_train_bench, run_train_bench

    try:
        counts = [int(p) for p in procs.split(",") if p.strip()]
    except ValueError:
        _fail(f"--procs: expected comma-separated integers, got {procs!r}")
    if not counts or min(counts) < 1:
        _fail(f"--procs: expected process counts of at least 1, got {procs!r}")
    res = run_train_bench(counts, steps, batch_size, data, threads, progress=None if json_out else err_console.print)
    _emit(res, print_train_bench, json_out)


def _experiment_progress(unit: str = "cells"):
    """A progress bar and its ``update(done, total, key)``: done / total, and throughput since the start
    (cells found finished in the run folder do not count towards it)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=err_console)
    task = prog.add_task(unit, total=None, rate="")
    start: dict = {}

    def update(done, total, key):
        now = time.perf_counter()
        if "t" not in start and key != "starting":  # what the run folder held: said once, above the bar
            err_console.print(f"{unit}: {done} of {total} already done in the output folder" if key == "resuming"
                              else f"{unit}: {key}")
        start.setdefault("t", now)
        start.setdefault("done", done)
        new, elapsed = done - start["done"], now - start["t"]
        rate = ""
        if new > 0 and elapsed > 0:
            per_min = 60.0 * new / elapsed
            eta = (total - done) / per_min * 60.0
            rate = f"{per_min:.1f} {unit}/min, {eta // 60:.0f}:{eta % 60:02.0f} left"
        prog.update(task, completed=done, total=total, description=f"{unit} ({key})", rate=rate)

    return prog, update


def _log_episode(out: Path, spec: str, log: Path | None, write) -> None:
    """--log-episode KEY:EPISODE of an experiment: ``write(key, episode, path)`` reruns it and writes the log."""
    key, sep, ep = spec.rpartition(":")
    if not sep or not key or not ep.isdigit():
        raise DrivediffError(f"--log-episode takes KEY:EPISODE (a cell key from OUT/cells, an episode number), "
                             f"got {spec!r}")
    written = write(key, int(ep), log or out / "logs" / f"{key}-{ep}.npz")
    console.print(f"wrote {written} (open it with: drivediff replay {written})")


def _config(factory, **kw):
    """An experiment's configuration; a bad value (an unknown scenario, method...) is a clean error."""
    try:
        return factory(**kw)
    except (ValueError, TypeError) as e:
        raise DrivediffError(str(e)) from None


def _names(value: str | None) -> tuple[str, ...] | None:
    """A comma-separated option as a tuple of names (None: not given)."""
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


@exp_app.command("planner")
def experiment_planner_cmd(
    out: Path = typer.Option(Path("runs/planner"), help="run folder (an interrupted run resumes here)"),
    quick: bool = typer.Option(False, help="a small budget (minutes), for smoke tests"),
    checkpoint: Path = typer.Option(None, help="planner checkpoint (default: the shipped one)"),
    episodes: int = typer.Option(None, min=1, help="worlds (seeds) per cell"),
    guidance: float = typer.Option(None, min=0.0, help="plan with safety guidance at this scale (default: unguided)"),
    log_episode: str = typer.Option(None, help="KEY:EPISODE: rerun that closed-loop episode of the run in OUT and "
                                               "write its log for `drivediff replay` (instead of the sweep)"),
    log: Path = typer.Option(None, help="with --log-episode: where to write it (default OUT/logs/KEY-EPISODE.npz)"),
    backend: BackendOpt = "local",
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    seed: int = typer.Option(0, min=0),
):
    """Closed loop (collisions, off-road, progress) and open loop (ADE/FDE) evaluation of the planner."""
    from drivediff.experiments.planner_eval import PlannerEvalConfig, episode_log, load_config, main, report

    if log_episode is not None:
        _log_episode(out, log_episode, log, lambda key, ep, path: episode_log(load_config(out), key, ep, path))
        return

    scale = _scale_options(backend, workers, address)  # the address reaches Ray through $RAY_ADDRESS

    kw = {"checkpoint": _checkpoint(checkpoint), "seed": seed, "guidance": guidance}
    if episodes:
        kw["episodes"] = episodes
    cfg = _config(PlannerEvalConfig.quick if quick else PlannerEvalConfig, **kw)
    prog, update = _experiment_progress()
    with prog:
        metrics = main(cfg, out, workers=scale["workers"], backend=scale["backend"], progress=update)
    console.print(report(metrics, cfg), highlight=False, soft_wrap=True)
    console.print(f"run folder: {out}")


@exp_app.command("platoon")
def experiment_platoon_cmd(
    out: Path = typer.Option(Path("runs/platoon"), help="run folder (an interrupted run resumes here)"),
    quick: bool = typer.Option(False, help="a small sweep (well under 2 minutes), for smoke tests"),
    seeds: int = typer.Option(None, help="worlds (seeds) per cell (default 5; --quick: 2)"),
    scenarios: str = typer.Option(None, help="comma-separated: braking, sine, cut-in, join, ring, merge"),
    methods: str = typer.Option(None, help="comma-separated: idm, acc, cacc (and registered methods)"),
    policies: bool = typer.Option(False, help="drive IDM/ACC/CACC through their numpy policies, not in-kernel"),
    checkpoint: Path = typer.Option(None, help="checkpoint of the diffusion methods (default: the shipped one)"),
    log_episode: str = typer.Option(None, help="KEY:WORLD: rerun that world of the run in OUT and write its log "
                                               "for `drivediff replay` (instead of the sweep)"),
    log: Path = typer.Option(None, help="with --log-episode: where to write it (default OUT/logs/KEY-WORLD.npz)"),
    backend: BackendOpt = "local",
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    seed: int = typer.Option(0, min=0),
):
    """Platoon coordination: string stability, safety, comfort and efficiency of IDM, ACC and CACC across
    scenarios, time gaps, V2V delays and packet loss (plus the theoretical CACC bound)."""
    from drivediff.experiments.platoon import PlatoonConfig, episode_log, headline, load_config, main

    if log_episode is not None:
        _log_episode(out, log_episode, log, lambda key, ep, path: episode_log(load_config(out), key, ep, path))
        return

    scale = _scale_options(backend, workers, address)
    kw: dict = {"seed": seed, "in_kernel": not policies, "checkpoint": _checkpoint(checkpoint)}
    if seeds is not None:
        kw["seeds"] = seeds
    for name, value in (("scenarios", _names(scenarios)), ("methods", _names(methods))):
        if value is not None:
            kw[name] = value
    cfg = _config(PlatoonConfig.quick_config if quick else PlatoonConfig, **kw)
    prog, update = _experiment_progress()
    with prog:
        metrics = main(cfg, out, workers=scale["workers"], backend=scale["backend"], progress=update,
                       address=scale["address"])
    rows = headline(metrics, cfg)
    table = Table(title="platoon experiment, nominal settings (full tables: report.md)")
    for col in (rows[0] if rows else {}):
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    console.print(table)
    console.print(f"run folder: {out} (report.md, metrics.json, runs.csv, plots/)")


@exp_app.command("safety")
def experiment_safety_cmd(
    out: Path = typer.Option(Path("runs/safety"), help="run folder (an interrupted run resumes here)"),
    quick: bool = typer.Option(False, help="two scenarios, two worlds each, short episodes (smoke test)"),
    checkpoint: Path = typer.Option(None, help="planner checkpoint (default: the shipped one)"),
    scenarios: str = typer.Option(None, help="comma-separated: dense-highway, merge, intersection, roundabout, "
                                             "cut-in, lead-braking"),
    methods: str = typer.Option(None, help="comma-separated: expert, unguided, guided, guided+corr, "
                                           "guided+corr-cen, guided+corr-com"),
    episodes: int = typer.Option(None, min=1, help="worlds (seeds) per cell"),
    scale: float = typer.Option(None, min=0.0, help="guidance scale of the guided methods (default 1)"),
    ablation_episodes: int = typer.Option(None, min=0, help="worlds per ablation cell (default: as many as "
                                                            "--episodes, at most 10; 0: no ablations)"),
    ablation_scenarios: str = typer.Option(None, help="comma-separated scenarios of the ablations (default: merge "
                                                      "and cut-in, those of them in --scenarios)"),
    log_episode: str = typer.Option(None, help="KEY:EPISODE: rerun that episode of the run in OUT and write its "
                                               "log for `drivediff replay` (instead of running the sweep)"),
    log: Path = typer.Option(None, help="with --log-episode: where to write it (default OUT/logs/KEY-EPISODE.npz)"),
    backend: BackendOpt = "local",
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    seed: int = typer.Option(0, min=0),
):
    """Safety-guided planning: collisions, off-road, TTC, comfort and progress of unguided and guided
    diffusion planning against the expert (nuPlan-style metrics, 95% CIs, ablations, report.md)."""
    from drivediff.experiments.safety import SafetyConfig, episode_log, load_config, main, targets

    if log_episode is not None:
        _log_episode(out, log_episode, log, lambda key, ep, path: episode_log(load_config(out), key, ep, path))
        return

    scale_kw = _scale_options(backend, workers, address)
    kw: dict = {"seed": seed, "checkpoint": _checkpoint(checkpoint)}
    for name, value in (("scenarios", _names(scenarios)), ("methods", _names(methods)), ("episodes", episodes),
                        ("scale", scale), ("ablation_episodes", ablation_episodes),
                        ("ablation_scenarios", _names(ablation_scenarios))):
        if value is not None:
            kw[name] = value
    cfg = _config(SafetyConfig.quick_config if quick else SafetyConfig, **kw)
    prog, update = _experiment_progress()
    with prog:
        metrics = main(cfg, out, workers=scale_kw["workers"], backend=scale_kw["backend"], progress=update,
                       ray_address=scale_kw["address"])
    t = metrics.get("targets") or targets(metrics["cells"])
    table = Table(title="safety evaluation: suite means (full tables: report.md)")
    for col in ("method", "collision rate", "progress [m]", "score", "off-road steps", "over-speed steps"):
        table.add_column(col)
    for method, row in t.get("suite_means", {}).items():
        if row["collision_rate"] == row["collision_rate"]:  # methods not run are NaN
            table.add_row(method, f"{row['collision_rate']:.3f}", f"{row['progress_m']:.1f}", f"{row['score']:.3f}",
                          f"{row['offroad_step_share']:.2%}", f"{row['overspeed_step_share']:.2%}")
    console.print(table)
    console.print(f"run folder: {out} (report.md, metrics.json, episodes.csv, plots/)")


@app.command("replay")
def replay_cmd(
    log: Path = typer.Argument(..., help="episode log (.npz) from simulate, an environment or an experiment"),
    export: str = typer.Option(None, help="render every frame without a window: out.mp4, out.gif or DIR/ (PNGs)"),
    fps: float = typer.Option(None, help="export: frames/s (default: the log's rate); viewer: refresh rate (60)"),
    size: str = typer.Option("1280x720", help="frame / window size WIDTHxHEIGHT"),
):
    """Open the scenario replay viewer on an episode log, or export it headlessly."""
    # export stays a str: a trailing "/" marks a folder of PNG frames, which Path would drop
    from drivediff.render.cli import parse_size, replay

    raise typer.Exit(replay(log, export=export, fps=fps, size=parse_size(size), console=err_console))


@bench_app.command("render")
def bench_render_cmd(
    json_out: bool = typer.Option(False, "--json", help="print machine-readable JSON only"),
    quick: bool = typer.Option(False, help="60 steps instead of 400 (smoke test)"),
):
    """Rendering and export speed (1280x720, 100 vehicles, trails; a 40 s episode to MP4/GIF)."""
    from drivediff.render.bench import print_render_bench, run_render_bench

    results = run_render_bench(quick=quick)
    _emit(results, print_render_bench, json_out)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("out/demo"), help="output folder"),
    agents: int = typer.Option(4, min=1, help="controlled vehicles"),
    video: bool = typer.Option(True, help="also export the episode as a GIF (640x360)"),
):
    """The main job: the shipped diffusion planner (decentralised, safety-guided) drives the controlled
    vehicles of the default scenario among IDM/MOBIL traffic; writes the log (with the plans), prints the
    summary and exports a GIF. `drivediff replay out/demo/merge.npz` opens it in the viewer."""
    from drivediff.planner.checkpoint import default_checkpoint

    if not default_checkpoint().is_file():
        _fail(f"the shipped planner checkpoint {default_checkpoint()} is missing (reinstall the package, or train "
              "one: see README, 'Training the shipped planner')")
    from drivediff.io import make_dirs

    make_dirs(out)
    log = out / f"{DEFAULT_SCENARIO}.npz"
    simulate_cmd(DEFAULT_SCENARIO, seed=0, steps=None, duration=None, log=log, set_=[f"controlled.count={agents}"],
                 render=False, policy="diffusion", checkpoint=None, mode="decentralized", sampling_steps=10,
                 candidates=4, guidance=True, guidance_scale=1.0)
    if video:
        from drivediff.render.cli import replay

        gif = out / f"{DEFAULT_SCENARIO}.gif"
        code = replay(log, export=str(gif), fps=None, size=(640, 360), console=err_console)
        if code:
            raise typer.Exit(code)


def _click_exceptions() -> tuple[type, ...]:
    """Click's usage-error classes: typer >= 0.20 raises those of its bundled copy of click."""
    import click

    kinds = [click.exceptions.ClickException]
    try:
        from typer._click.exceptions import ClickException

        kinds.append(ClickException)
    except ImportError:
        pass
    return tuple(kinds)


def main(argv: list[str] | None = None) -> int:
    try:
        rv = app(args=argv, standalone_mode=False)  # click returns the code of a typer.Exit here
    except DrivediffError as e:
        from rich.markup import escape

        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)  # keep [brackets] in messages
        return 2
    except typer.Exit as e:
        return e.exit_code
    except OSError as e:  # the file system refused (a path in the way, permissions, a full disk)
        if e.filename is None:  # not about a file (a lost connection, say): a bug report needs the traceback
            raise
        from rich.markup import escape

        where = f": {e.filename}" if e.filename else ""
        err_console.print(f"[bold red]error:[/] {escape((e.strerror or str(e)) + where)}", highlight=False)
        return 2
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as e:  # usage errors (a bad option value, a missing argument)
        if isinstance(e, _click_exceptions()):
            e.show()
            return e.exit_code
        raise
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
