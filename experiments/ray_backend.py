"""The Ray backend of ``run_tasks``: every task (an experiment cell, a collection shard) becomes a Ray task.

    drivediff experiment planner --backend ray                       # a local Ray instance on this machine
    drivediff experiment planner --backend ray --address HOST:6379   # an existing cluster (or $RAY_ADDRESS)

What travels: each Ray task gets the task's function (by reference: drivediff must be installed, at the
same version, on every node) and its small arguments (a cell: key and parameters); what comes back is the
task's result (a cell's rows, a shard's arrays), which this process stores in the run folder. Workers never
write files, so the nodes need no shared file system.

Each task asks for one CPU and runs single-threaded (``runner.WORKER_ENV``, set through the job's runtime
environment), so a node runs as many tasks at once as it has CPUs. A task whose worker process dies (killed,
out of memory, its node lost) is retried by Ray up to ``max_retries`` times; an exception raised by the task
itself is not retried and stops the run (finished results are kept: rerun to resume). At most twice the
cluster's CPUs are in flight at once, so a sweep of 100,000 cells does not put 100,000 tasks in Ray's queue.

Ray is an optional extra: ``pip install 'drivediff[ray]'``.
"""

from __future__ import annotations

import collections
import logging
import os

from drivediff.errors import DrivediffError
from drivediff.experiments.runner import MAX_RETRIES, WORKER_ENV

INSTALL_HINT = "--backend ray needs Ray, an optional extra: pip install 'drivediff[ray]'"
# passed on to workers of a Ray instance started here (a cluster's nodes keep their own paths)
LOCAL_ENV_VARS = ("NUMBA_CACHE_DIR", "DRIVEDIFF_CACHE_DIR", "SDL_VIDEODRIVER", "SDL_AUDIODRIVER", "MPLBACKEND")


def require_ray():
    """The ``ray`` module, or a DrivediffError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise DrivediffError(INSTALL_HINT) from None
    return ray


def _call(fn, *args):
    """What each Ray task runs (module-level, so Ray ships it by reference)."""
    return fn(*args)


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join ``address`` (or ``$RAY_ADDRESS``), else start a quiet local Ray instance with ``num_cpus`` CPUs
    (default: all). Returns True if this call started the connection (the caller then shuts it down);
    a connection that is already open (``ray.init`` called by the user) is used as it is."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    env = dict(WORKER_ENV)
    address = address or os.environ.get("RAY_ADDRESS")
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
    if address:
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise DrivediffError(f"cannot join the Ray cluster at {address}: {e}") from None
    else:
        env.update({k: os.environ[k] for k in LOCAL_ENV_VARS if k in os.environ})
        # "local": a new instance even if a `ray start` cluster runs here (joining one takes --address auto)
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 runtime_env={"env_vars": env}, object_store_memory=256 * 1024**2, **quiet)
    return True


def run_ray(tasks, store, workers: int | None = None, progress=None, done: int = 0, total: int | None = None,
            address: str | None = None, max_retries: int = MAX_RETRIES) -> None:
    """Run ``tasks`` as Ray tasks; ``store(task, result)`` runs in this process as each one finishes.

    ``workers`` caps the tasks running at once (and sizes a local Ray instance); default: the cluster's CPUs.
    """
    ray = require_ray()
    started = connect(address, workers)
    try:
        remote = ray.remote(num_cpus=1, max_retries=max_retries)(_call)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        limit = workers or 2 * cpus  # a little queued behind the running ones keeps every CPU busy
        total = done + len(tasks) if total is None else total
        pending = collections.deque(tasks)
        in_flight = {}
        while pending or in_flight:
            while pending and len(in_flight) < limit:
                t = pending.popleft()
                in_flight[remote.remote(t.fn, *t.args)] = t
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                t = in_flight.pop(ref)
                store(t, _get(ray, ref, t, max_retries))
                done += 1
                if progress is not None:
                    progress(done, total, t.key)
    finally:
        if started:
            ray.shutdown()


def _get(ray, ref, task, max_retries):
    from ray import exceptions as rex

    try:
        return ray.get(ref)
    except rex.RayTaskError as e:  # the task raised: re-raise its own exception, as the local backend does
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise
    except (rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError) as e:
        raise DrivediffError(f"{task.key}: its Ray worker died {max_retries + 1} times ({type(e).__name__}); "
                             "finished results are kept, rerun to resume") from None
