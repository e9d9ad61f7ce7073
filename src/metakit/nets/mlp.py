from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..errors import MetakitError


class MLP(nn.Sequential):
    """Linear layers with ReLU between them: in -> hidden_sizes... -> out."""

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], out_features: int):
        sizes = [in_features, *hidden_sizes, out_features]
        if any(not isinstance(s, int) or s < 1 for s in sizes):
            raise MetakitError(f"MLP sizes must be integers >= 1, got in={in_features}, "
                               f"hidden={list(hidden_sizes)}, out={out_features}")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)
