"""The control codec: physical control sequences <-> the normalised vectors the denoiser diffuses.

controls (..., H, 2) --least squares on the B-spline basis--> coefficients (..., K, 2)
    --per-channel (x - mean) / std--> flattened (..., 2K).

Fitted on the training data and saved in checkpoints. With ``basis=None`` the H raw steps are diffused.
"""

from __future__ import annotations

import numpy as np
import torch


class Normalizer(torch.nn.Module):
    """Encode (..., H, 2) controls [acceleration, steering] to (..., D) and back."""

    def __init__(self, mean=(0.0, 0.0), std=(1.0, 1.0), basis=None):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        if basis is not None:
            b = torch.as_tensor(np.asarray(basis), dtype=torch.float32)
            self.register_buffer("basis", b)  # (H, K)
            self.register_buffer("pinv", torch.linalg.pinv(b))  # (K, H)
        else:
            self.basis = None
            self.pinv = None

    def to_coef(self, ctrl: torch.Tensor) -> torch.Tensor:
        """(..., H, 2) -> (..., K, 2) least-squares coefficients (identity without a basis)."""
        return ctrl if self.pinv is None else torch.einsum("kh,...hc->...kc", self.pinv, ctrl)

    def to_ctrl(self, coef: torch.Tensor) -> torch.Tensor:
        return coef if self.basis is None else torch.einsum("hk,...kc->...hc", self.basis, coef)

    @classmethod
    def fit(cls, ctrl: np.ndarray, mask: np.ndarray, basis=None, min_std: float = 1e-3) -> Normalizer:
        """Fit on controls (N, ..., H, 2) whose every step is valid where ``mask`` (N, ...) is True."""
        coef = torch.as_tensor(ctrl[mask], dtype=torch.float32)
        if coef.shape[0] < 2:
            raise ValueError("too few control sequences to fit the normaliser")
        coef = cls(basis=basis).to_coef(coef).reshape(-1, 2).numpy()
        return cls(coef.mean(axis=0), np.maximum(coef.std(axis=0), min_std), basis)

    def encode(self, ctrl: torch.Tensor) -> torch.Tensor:
        """(..., H, 2) physical -> (..., D) normalised."""
        z = (self.to_coef(ctrl) - self.mean) / self.std
        return z.reshape(*z.shape[:-2], -1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(..., D) normalised -> (..., H, 2) physical."""
        z = z.reshape(*z.shape[:-1], -1, 2)
        return self.to_ctrl(z * self.std + self.mean)

    def state(self) -> dict:
        out = {"mean": self.mean.cpu(), "std": self.std.cpu()}
        if self.basis is not None:
            out["basis"] = self.basis.cpu()
        return out

    @classmethod
    def from_state(cls, d: dict) -> Normalizer:
        return cls(d["mean"], d["std"], d.get("basis"))
