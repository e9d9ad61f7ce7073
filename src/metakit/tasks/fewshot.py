"""N-way K-shot episodes from a class-indexed image tensor, by tensor indexing alone."""
from __future__ import annotations

import torch

from ..batch import TaskBatch
from ..errors import MetakitError


class FewShotClassification:
    """Episodes of `ways` classes with `shots` support and `queries` query images per class.

    images: uint8 [classes, drawings, H, W] (e.g. Omniglot.images), 255 = ink, or floats already
    in [0, 1] (used as they are). Each task picks
    its classes and drawings at random; label i is the i-th class the task drew, so labels are
    a fresh random assignment per task. x: float [T, ways * n, 1, H, W] in [0, 1], class-major;
    y: long [T, ways * n].
    """

    def __init__(self, images: torch.Tensor, ways: int = 5, shots: int = 1, queries: int = 1):
        images = getattr(images, "images", images)  # an Omniglot dataset or its tensor
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise MetakitError("images must be a tensor [classes, drawings, H, W], got "
                               f"{getattr(images, 'shape', type(images).__name__)}")
        if images.is_floating_point():
            if images.numel() and (images.min() < 0 or images.max() > 1):
                raise MetakitError(
                    f"float images must lie in [0, 1] (uint8 images are divided by 255), got values "
                    f"in [{images.min().item():g}, {images.max().item():g}]"
                )
        elif images.dtype != torch.uint8:
            raise MetakitError(f"images must be uint8 (0-255) or floats in [0, 1], got {images.dtype}")
        classes, drawings = images.shape[:2]
        for name, value in (("ways", ways), ("shots", shots), ("queries", queries)):
            if not isinstance(value, int) or value < 1:
                raise MetakitError(f"{name} must be an integer >= 1, got {value!r}")
        if ways > classes:
            raise MetakitError(f"{ways}-way episodes need at least {ways} classes; the data has {classes}")
        if shots + queries > drawings:
            raise MetakitError(
                f"shots + queries = {shots + queries} exceeds the {drawings} drawings per class"
            )
        self.images, self.ways, self.shots, self.queries = images, ways, shots, queries

    def sample(self, num_tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise MetakitError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
        classes, drawings, height, width = self.images.shape
        per_class = self.shots + self.queries
        # uniform subsets without replacement, in random order: the k largest of uniform keys
        picked = torch.rand(num_tasks, classes, generator=generator).topk(self.ways, dim=1).indices
        which = torch.rand(num_tasks, self.ways, drawings, generator=generator).topk(per_class, dim=2).indices
        x = self.images[picked[..., None], which]  # [T, N, K+Q, H, W]
        x = x.float() if self.images.is_floating_point() else x.float().div_(255)
        labels = torch.arange(self.ways).view(1, -1, 1).expand(num_tasks, -1, per_class)

        def part(t, lo, hi):  # [T, N, n, ...] -> [T, N * n, ...], class-major
            return t[:, :, lo:hi].reshape(num_tasks, self.ways * (hi - lo), *t.shape[3:])

        k = self.shots
        return TaskBatch(
            part(x, 0, k).unsqueeze(2),
            part(labels, 0, k),
            part(x, k, per_class).unsqueeze(2),
            part(labels, k, per_class),
        )
