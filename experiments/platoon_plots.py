"""Plots of the platoon experiment (matplotlib, Agg): time-space diagrams of the ring, spacing error and
acceleration per vehicle of the platoon manoeuvres, amplification ratios along the platoon, and the CACC
amplification against the time gap next to the theoretical bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    from drivediff.io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"))
    _plt().close(fig)
    return path


def _title(e: dict) -> str:
    from drivediff.experiments.platoon import _setting

    s = _setting(e)
    return e["method"] if s == "-" else f"{e['method']} ({s})"


def time_space(metrics: dict, traces: dict, out: Path) -> list[Path]:
    """Position along the ring against time, coloured by speed, one panel per method (world 0)."""
    keys = [k for k in traces if metrics["cells"].get(k, {}).get("scenario") == "ring" and traces[k]]
    if not keys:
        return []
    plt = _plt()
    fig, axes = plt.subplots(len(keys), 1, figsize=(9, 2.6 * len(keys)), squeeze=False, sharex=True)
    vmax = float(np.percentile(np.concatenate([np.ravel(traces[k]["speed"]) for k in keys]), 99.5)) or 1.0
    for ax, k in zip(axes[:, 0], keys, strict=True):
        tr = traces[k]
        t = np.asarray(tr["t"])
        pos = np.asarray(tr["pos"])
        spd = np.asarray(tr["speed"])
        sc = ax.scatter(np.repeat(t, pos.shape[1]), pos.ravel(), c=spd.ravel(), s=0.4, cmap="viridis_r", vmin=0,
                        vmax=vmax, rasterized=True)
        mine = np.flatnonzero(tr["method"])
        if 0 < len(mine) <= pos.shape[1] // 2:  # mark a few; with full penetration the colours tell more
            for i in mine:
                ax.scatter(t, pos[:, i], s=0.6, c="red", rasterized=True)
        ax.set_ylabel("position [m]")
        ax.set_ylim(0, tr["ring_length"])
        note = "  (red: the method's vehicles)" if 0 < len(mine) <= pos.shape[1] // 2 else ""
        ax.set_title(_title(metrics["cells"][k]) + note, fontsize=9)
    axes[-1, 0].set_xlabel("time [s]")
    fig.colorbar(sc, ax=axes[:, 0].tolist(), label="speed [m/s]")
    return [_save(fig, out / "ring_time_space.png")]


def manoeuvres(metrics: dict, traces: dict, scenarios, out: Path) -> list[Path]:
    """Spacing error and acceleration of every vehicle of the platoon string over time, per method."""
    paths = []
    plt = _plt()
    for sc in scenarios:
        keys = [k for k in traces if metrics["cells"].get(k, {}).get("scenario") == sc and traces[k]]
        if not keys:
            continue
        fig, axes = plt.subplots(2, len(keys), figsize=(4.2 * len(keys), 5.4), squeeze=False, sharex=True)
        for j, k in enumerate(keys):
            tr = traces[k]
            t = np.asarray(tr["t"])
            acc = np.asarray(tr["accel"], float)
            err = np.asarray(tr["spacing"], float)
            colors = plt.cm.viridis(np.linspace(0, 0.9, acc.shape[1]))
            for i in range(err.shape[1]):
                axes[0, j].plot(t, err[:, i], color=colors[i + 1], lw=1)
            for i in range(acc.shape[1]):
                axes[1, j].plot(t, acc[:, i], color=colors[i], lw=1, label="first" if i == 0 else None)
            axes[0, j].set_title(_title(metrics["cells"][k]), fontsize=9)
            axes[1, j].set_xlabel("time [s]")
        axes[0, 0].set_ylabel("spacing error [m]")
        axes[1, 0].set_ylabel("acceleration [m/s²]")
        fig.suptitle(f"{sc}: vehicles front (dark) to back (light)", fontsize=10)
        paths.append(_save(fig, out / f"{sc}_signals.png"))
    return paths


def amplification(metrics: dict, scenarios, cfg, out: Path) -> list[Path]:
    """L2 amplification ratio of acceleration against the vehicle index: every method at the nominal point,
    and CACC across time gaps (nominal delay and loss)."""
    from drivediff.experiments.platoon import METHODS

    paths = []
    plt = _plt()
    for sc in scenarios:
        es = [e for e in metrics["cells"].values() if e["scenario"] == sc and e.get("gamma_l2_accel")]
        if not es:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        for e in es:
            m = METHODS.get(e["method"])
            d_ok = e["delay"] == (cfg.nominal_delay if m and "delay" in m.axes else 0.0)
            p_ok = e["loss"] == (cfg.nominal_loss if m and "loss" in m.axes else 0.0)
            h_ok = e["time_gap"] in (None, cfg.nominal_time_gap) or e["method"] == "cacc"
            if not (d_ok and p_ok and h_ok):
                continue
            g = e["gamma_l2_accel"]
            ax.plot(np.arange(1, len(g) + 1), g, marker="o", ms=3, label=_title(e))
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xlabel("vehicle index along the platoon")
        ax.set_ylabel("gamma (L2, acceleration)")
        ax.set_title(sc, fontsize=10)
        ax.legend(fontsize=7, ncol=2)
        paths.append(_save(fig, out / f"{sc}_amplification.png"))
    return paths


def gamma_vs_gap(metrics: dict, cfg, out: Path) -> list[Path]:
    """CACC (loss 0) and ACC max amplification against h on the first grid scenario, with theory's h_min."""
    if not cfg.grid_scenarios:
        return []
    sc = cfg.grid_scenarios[0]
    es = [e for e in metrics["cells"].values() if e["scenario"] == sc and e["time_gap"] is not None
          and e["loss"] == 0.0 and "gamma_max_l2_accel" in e["metrics"]]
    if not es:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    colors = plt.cm.plasma(np.linspace(0, 0.8, len(cfg.delays)))
    for c, d in zip(colors, cfg.delays, strict=True):
        pts = sorted((e["time_gap"], e["metrics"]["gamma_max_l2_accel"]["mean"]) for e in es
                     if e["method"] == "cacc" and e["delay"] == d)
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", color=c, label=f"CACC, delay {d:.2f} s")
            hmin = metrics["theory"]["cacc_h_min"].get(f"{d:.2f}", {}).get("continuous")
            if hmin:
                ax.axvline(hmin, color=c, ls=":", lw=1)
    pts = sorted((e["time_gap"], e["metrics"]["gamma_max_l2_accel"]["mean"]) for e in es if e["method"] == "acc")
    if pts:
        ax.plot(*zip(*pts, strict=True), marker="s", color="gray", label="ACC")
    crashed = [(e["time_gap"], e["metrics"]["gamma_max_l2_accel"]["mean"]) for e in es
               if e.get("collision_rate", 0) > 0 and e["method"] in ("acc", "cacc")]
    if crashed:
        ax.scatter(*zip(*crashed, strict=True), marker="x", s=70, color="red", zorder=5, label="collisions")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("time gap h [s]")
    ax.set_ylabel("max gamma (L2, acceleration)")
    ax.set_title(f"{sc}: simulated amplification; dotted: theoretical h_min per delay", fontsize=9)
    ax.legend(fontsize=7)
    return [_save(fig, out / "cacc_gamma_vs_time_gap.png")]


def make_plots(metrics: dict, traces: dict, cfg, out: Path) -> list[Path]:
    from drivediff.experiments.platoon import SCENARIOS

    platoons = [s for s in cfg.scenarios if SCENARIOS[s].kind == "platoon"]
    return (time_space(metrics, traces, out) + manoeuvres(metrics, traces, platoons, out)
            + amplification(metrics, platoons, cfg, out) + gamma_vs_gap(metrics, cfg, out))
