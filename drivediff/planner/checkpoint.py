"""Planner checkpoints: weights, normaliser and config in one file, loaded with ``weights_only=True``."""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from drivediff.errors import CheckpointError
from drivediff.io import atomic_write
from drivediff.planner.config import PlannerConfig
from drivediff.planner.denoiser import Denoiser
from drivediff.planner.normalizer import Normalizer

FORMAT = "drivediff-planner"
VERSION = 1


@dataclass
class Planner:
    """A loaded planner: denoiser (eval mode), normaliser and config."""

    cfg: PlannerConfig
    model: Denoiser
    normalizer: Normalizer
    meta: dict

    def to(self, device) -> Planner:
        self.model.to(device)
        self.normalizer.to(device)
        return self


def atomic_save(obj, path: Path) -> None:
    atomic_write(path, lambda fh: torch.save(obj, fh))


def save_checkpoint(path: Path, cfg: PlannerConfig, model: Denoiser, normalizer: Normalizer,
                    meta: dict | None = None) -> None:
    """Write an inference checkpoint (no optimiser state) atomically."""
    atomic_save({
        "format": FORMAT,
        "version": VERSION,
        "config": cfg.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "normalizer": normalizer.state(),
        "meta": dict(meta or {}),
    }, path)


def read_checkpoint_dict(path: Path) -> dict:
    """torch.load with weights_only=True and clear errors for missing, corrupted or foreign files."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        msg = str(e).strip()
        if "WeightsUnpickler error:" in msg:
            # keep only the unpickler's finding: torch's message also explains how to load the file unsafely
            detail = msg.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
        else:
            detail = msg.splitlines()[0] if msg else type(e).__name__
        raise CheckpointError(f"{path}: not a loadable drivediff checkpoint (corrupted, truncated, or it holds "
                              f"objects that weights_only=True loading refuses): {' '.join(detail.split())[:200]}") \
            from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a drivediff planner checkpoint (no '{FORMAT}' marker)")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {obj.get('version')} is not supported (expected {VERSION})")
    for key in ("config", "model", "normalizer"):
        if key not in obj:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    return obj


def load_planner(path: Path, device="cpu") -> Planner:
    obj = read_checkpoint_dict(path)
    try:
        cfg = PlannerConfig.from_dict(dict(obj["config"]))
        model = Denoiser(cfg)
        model.load_state_dict(obj["model"])
        norm = Normalizer.from_state(obj["normalizer"])
    except (ValueError, TypeError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: checkpoint does not match this planner: {str(e).splitlines()[0][:200]}") \
            from None
    model.eval()
    return Planner(cfg, model, norm, dict(obj.get("meta", {}))).to(device)


def default_checkpoint() -> Path:
    """The small planner shipped with the package (trained by `drivediff collect` + `drivediff train`)."""
    return Path(__file__).resolve().parent.parent / "assets" / "planner.pt"
