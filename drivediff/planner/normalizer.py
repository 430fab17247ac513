"""Per-channel normalisation of the diffused controls (fitted on the data, saved in checkpoints)."""

from __future__ import annotations

import numpy as np
import torch


class Normalizer(torch.nn.Module):
    """x_norm = (x - mean) / std per control channel (acceleration, steering)."""

    def __init__(self, mean=(0.0, 0.0), std=(1.0, 1.0)):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    @classmethod
    def fit(cls, ctrl: np.ndarray, mask: np.ndarray, min_std: float = 1e-3) -> Normalizer:
        """Fit on controls (..., 2) where ``mask`` (...) is True."""
        vals = ctrl[mask]
        if vals.shape[0] < 2:
            raise ValueError("too few control samples to fit the normaliser")
        return cls(vals.mean(axis=0), np.maximum(vals.std(axis=0), min_std))

    def encode(self, ctrl: torch.Tensor) -> torch.Tensor:
        """(..., H, 2) physical -> (..., 2H) normalised, flattened per agent."""
        z = (ctrl - self.mean) / self.std
        return z.reshape(*z.shape[:-2], -1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(..., 2H) normalised -> (..., H, 2) physical."""
        z = z.reshape(*z.shape[:-1], -1, 2)
        return z * self.std + self.mean
