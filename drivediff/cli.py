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

import typer
from rich.console import Console
from rich.table import Table

from drivediff.errors import DrivediffError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="drivediff: multi-agent driving simulation and a CTDE diffusion planner.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (printed as tables; --json for machines).")
app.add_typer(bench_app, name="bench")
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
):
    """Run a scenario with its default policies and print a summary."""
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
    initial = world.snapshot(0)
    t0 = time.perf_counter()
    if render:
        rec = _run_rendered(world, n)
    else:
        rec = _run_with_progress(world, n)
    wall = time.perf_counter() - t0
    summary = episode_summary({k: rec[k][0] for k in rec if k != "t"}, world.dt)
    summary.update(scenario=world.config.name, seed=seed, wall_s=wall,
                   steps_per_s=n / wall if wall > 0 else float("inf"))
    if log is not None:
        meta = dict(scenario=world.config.name, source=world.scenario.source, seed=seed, dt=world.dt,
                    policy="idm")
        try:
            path = write_log(log, EpisodeLog.from_recording(rec, 0, world.road, meta, initial=initial))
        except OSError as e:
            _fail(f"cannot write the log to {log}: {e.strerror or e}")
        summary["log"] = str(path)
    _print_summary(summary)


def _run_with_progress(world, n: int) -> dict:
    from rich.progress import Progress

    with Progress(console=err_console, transient=True) as prog:
        task = prog.add_task("simulating", total=n)
        return world.run(n, record=True, progress=lambda done: prog.update(task, completed=done))


def _run_rendered(world, n: int) -> dict:
    from drivediff.render.live import run_live  # pygame only when asked for

    return run_live(world, n)


def _print_summary(summary: dict) -> None:
    table = Table(title=f"{summary['scenario']} (seed {summary['seed']})", show_header=False)
    rows = [
        ("steps", f"{summary['steps']} ({summary['duration_s']:.1f} s simulated)"),
        ("vehicles", f"{summary['vehicles_max']} at most at once, {summary['vehicles_total']} in total"),
        ("collisions", f"{summary['collisions']} (controlled vehicles: {summary['controlled_collisions']})"),
        ("off-road events", str(summary["offroad_events"])),
        ("mean speed", f"{summary['mean_speed']:.2f} m/s"),
        ("distance driven", f"{summary['distance_km']:.2f} vehicle-km"),
        ("wall time", f"{summary['wall_s']:.3f} s ({summary['steps_per_s']:.0f} steps/s)"),
    ]
    if "log" in summary:
        rows.append(("log", summary["log"]))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


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
