"""The ``drivediff`` command.

    drivediff scenarios                          list the scenario catalog
    drivediff simulate SCENARIO [options]        run a scenario, print a summary, optionally write a log
    drivediff bench sim [--json]                 simulator speed, side by side with highway-env
    drivediff demo                               the main job on the default scenario

Errors in user input (scenario files, options, logs) print a message and exit with status 2, without a
traceback.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

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
console = Console()
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
    duration: float = typer.Option(None, min=0.0, help="simulated time [s] (alternative to --steps)"),
    log: Path = typer.Option(None, help="write the episode log (.npz) here"),
    set_: list[str] = typer.Option([], "--set", help="override a scenario field, e.g. controlled.count=4"),
    render: bool = typer.Option(False, help="show the run live in a window"),
    policy: str = typer.Option("idm", help="who drives the controlled vehicles: idm | diffusion"),
    checkpoint: Path = typer.Option(None, help="planner checkpoint (default: the shipped one)"),
    mode: str = typer.Option("decentralized", help="diffusion planner: decentralized | centralized | communication"),
    sampling_steps: int = typer.Option(10, min=1, help="diffusion planner: denoising steps"),
    candidates: int = typer.Option(4, min=1, help="diffusion planner: candidate plans per query"),
):
    """Run a scenario and print a summary (controlled vehicles driven by --policy)."""
    from drivediff.scenarios import parse_set_options
    from drivediff.sim import World
    from drivediff.sim.log import EpisodeLog, write_log
    from drivediff.sim.summary import episode_summary

    if steps is not None and duration is not None:
        _fail("give --steps or --duration, not both")
    world = World(scenario, num_worlds=1, overrides=parse_set_options(set_))
    n = steps if steps is not None else (int(round(duration / world.dt)) if duration is not None
                                          else world.scenario.num_steps)
    world.reset(seed=seed)
    pol = _make_policy(policy, checkpoint, mode, sampling_steps, candidates, record=log is not None, seed=seed)
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
        meta = dict(scenario=world.config.name, source=world.scenario.source, seed=seed, dt=world.dt,
                    policy=policy, mode=mode if policy == "diffusion" else None)
        ep = EpisodeLog.from_recording(rec, 0, world.road, meta, initial=initial)
        if pol is not None:
            from drivediff.agents.rollout import plan_extras

            ep.extras.update(plan_extras(pol, ep.t, world.dt, 0, ep.num_slots))
        try:
            path = write_log(log, ep)
        except OSError as e:
            _fail(f"cannot write the log to {log}: {e.strerror or e}")
        summary["log"] = str(path)
    _print_summary(summary)


def _make_policy(name, checkpoint, mode, sampling_steps, candidates, record, seed):
    if name == "idm":
        return None  # the controlled vehicles keep their in-kernel IDM/MOBIL (fastest: World.run)
    from drivediff.agents import make_policy
    from drivediff.planner.sampler import SamplerConfig

    return make_policy(name, checkpoint=checkpoint, mode=mode, record=record, seed=seed,
                       sampler=SamplerConfig(steps=sampling_steps, candidates=candidates))


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
):
    """Roll out expert traffic and write training windows (resumable: existing shards are kept)."""
    from rich.progress import Progress

    from drivediff.planner.data import DEFAULT_SCENARIOS, collect
    from drivediff.scenarios import get_scenario

    names = list(scenarios) if scenarios else list(DEFAULT_SCENARIOS)
    for name in names:
        get_scenario(name)  # fail early on a bad name or file
    with Progress(console=err_console) as prog:
        task = prog.add_task("collecting", total=len(names) * episodes)
        paths = collect(names, episodes, out, seed=seed, num_worlds=worlds,
                        progress=lambda done, total, sc: prog.update(task, completed=done, description=sc))
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
    seed: int = typer.Option(0, min=0),
):
    """Train the diffusion planner (single process, or under torchrun for DDP)."""
    from rich.progress import Progress

    from drivediff.planner.train import TrainConfig, train

    tcfg = TrainConfig(steps=steps, minutes=minutes, batch_size=batch_size, lr=lr, seed=seed)
    with Progress(console=err_console) as prog:
        task = prog.add_task("training", total=steps)
        res = train(data, out, tcfg=tcfg, device=device,
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
    if json_out:
        print(json.dumps(results, indent=2))
    else:
        from drivediff.experiments.bench import print_sim_bench

        print_sim_bench(results, console)


@bench_app.command("env")
def bench_env_cmd(
    json_out: bool = typer.Option(False, "--json", help="print machine-readable JSON only"),
    quick: bool = typer.Option(False, help="fewer steps (smoke test)"),
    highway_env: bool = typer.Option(True, help="include highway-env (if installed)"),
):
    """Environment throughput: highway-v0 (1 agent), 4-agent PettingZoo intersection, batched 256 x 4."""
    from drivediff.experiments.bench_env import print_env_bench, run_env_bench

    res = run_env_bench(quick=quick, with_highway_env=highway_env, progress=None if json_out else err_console)
    if json_out:
        print(json.dumps(res, indent=2))
    else:
        print_env_bench(res, console)


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
    if json_out:
        print(json.dumps(results, indent=2))
    else:
        print_planner_bench(results, console)


def _experiment_progress():
    from rich.progress import Progress

    prog = Progress(console=err_console)
    task = prog.add_task("cells", total=None)

    def update(done, total, key):
        prog.update(task, completed=done, total=total, description=f"cells ({key})")

    return prog, update


@exp_app.command("planner")
def experiment_planner_cmd(
    out: Path = typer.Option(Path("runs/planner"), help="run folder (an interrupted run resumes here)"),
    quick: bool = typer.Option(False, help="a small budget (minutes), for smoke tests"),
    checkpoint: Path = typer.Option(None, help="planner checkpoint (default: the shipped one)"),
    episodes: int = typer.Option(None, min=1, help="worlds (seeds) per cell"),
    workers: int = typer.Option(1, min=1, help="local worker processes"),
    backend: str = typer.Option("local", help="local | ray"),
    seed: int = typer.Option(0, min=0),
):
    """Closed loop (collisions, off-road, progress) and open loop (ADE/FDE) evaluation of the planner."""
    from drivediff.experiments.planner_eval import PlannerEvalConfig, main, report

    kw = {"checkpoint": str(checkpoint) if checkpoint else None, "seed": seed}
    if episodes:
        kw["episodes"] = episodes
    cfg = PlannerEvalConfig.quick(**kw) if quick else PlannerEvalConfig(**kw)
    prog, update = _experiment_progress()
    with prog:
        metrics = main(cfg, out, workers=workers, backend=backend, progress=update)
    console.print(report(metrics, cfg))
    console.print(f"run folder: {out}")


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
    if json_out:
        print(json.dumps(results, indent=2))
    else:
        print_render_bench(results, console)


@app.command("demo")
def demo_cmd(out: Path = typer.Option(Path("out/demo"), help="output folder")):
    """The main job on the default scenario: simulate it, write the log and print the summary."""
    out.mkdir(parents=True, exist_ok=True)
    simulate_cmd(DEFAULT_SCENARIO, seed=0, steps=None, duration=None, log=out / f"{DEFAULT_SCENARIO}.npz",
                 set_=[], render=False)


def main(argv: list[str] | None = None) -> int:
    try:
        rv = app(args=argv, standalone_mode=False)  # click returns the code of a typer.Exit here
    except DrivediffError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        raise
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
