"""Sinusoid regression (Finn et al. 2017, section 5.1): y = A sin(x - phase)."""
from __future__ import annotations

import math

import torch

from ..batch import TaskBatch
from ..errors import MetakitError


class Sinusoid:
    """Amplitude ~ U[0.1, 5.0], phase ~ U[0, pi], x ~ U[-5, 5]; K support and Q query points."""

    def __init__(self, support_shots: int = 10, query_shots: int = 10,
                 amplitude: tuple[float, float] = (0.1, 5.0), phase: tuple[float, float] = (0.0, math.pi),
                 x_range: tuple[float, float] = (-5.0, 5.0)):
        for name, value in (("support_shots", support_shots), ("query_shots", query_shots)):
            if not isinstance(value, int) or value < 1:
                raise MetakitError(f"Sinusoid {name} must be an integer >= 1, got {value!r}")
        for name, (low, high) in (("amplitude", amplitude), ("phase", phase), ("x_range", x_range)):
            if not low <= high:
                raise MetakitError(
                    f"Sinusoid {name} range must be (low, high) with low <= high, got {(low, high)}"
                )
        self.support_shots, self.query_shots = support_shots, query_shots
        self.amplitude, self.phase, self.x_range = tuple(amplitude), tuple(phase), tuple(x_range)

    def sample_functions(self, num_tasks: int, generator: torch.Generator | None = None):
        """Amplitudes and phases of num_tasks tasks, each of shape [T]."""
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise MetakitError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
        return (
            _uniform((num_tasks,), self.amplitude, generator),
            _uniform((num_tasks,), self.phase, generator),
        )

    def sample(self, num_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        amplitude, phase = self.sample_functions(num_tasks, generator)
        x = _uniform((num_tasks, self.support_shots + self.query_shots, 1), self.x_range, generator)
        y = self.evaluate(amplitude, phase, x)
        k = self.support_shots
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:])

    @staticmethod
    def evaluate(amplitude: torch.Tensor, phase: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """y of each task at x [T, N, 1]."""
        return amplitude[:, None, None] * torch.sin(x - phase[:, None, None])


def _uniform(shape, bounds, generator):
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=generator)
