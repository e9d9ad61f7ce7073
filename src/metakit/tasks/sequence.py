"""Episodes for sequence learners (MANN): classes drawn at random, several drawings of each,
shown one at a time in a random order, by tensor indexing alone."""
from __future__ import annotations

import torch

from ..errors import MetakitError


class SequenceEpisodes:
    """`classes` classes a episode, `per_class` drawings of each (L = classes x per_class steps).
    Labels are a fresh random assignment in every episode (label i is the i-th class drawn).

    images: uint8 [classes, drawings, H, W], 255 = ink (e.g. Omniglot.images).
    sample(B) -> (x float [B, L, 1, H, W] in [0, 1] with ink = 1, y long [B, L])."""

    def __init__(self, images: torch.Tensor, classes: int = 5, per_class: int = 10):
        images = getattr(images, "images", images)
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.dtype != torch.uint8:
            what = f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}"
            raise MetakitError(f"images must be uint8 [classes, drawings, H, W], got {what}")
        for name, value in (("classes", classes), ("per_class", per_class)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MetakitError(f"{name} must be an integer >= 1, got {value!r}")
        if classes > images.shape[0]:
            raise MetakitError(f"{classes} classes an episode need at least {classes} classes; the data has "
                               f"{images.shape[0]}")
        if per_class > images.shape[1]:
            raise MetakitError(f"per_class = {per_class} exceeds the {images.shape[1]} drawings per class")
        self.images, self.classes, self.per_class = images, classes, per_class

    def sample(self, num_episodes: int, generator: torch.Generator | None = None):
        if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 1:
            raise MetakitError(f"num_episodes must be an integer >= 1, got {num_episodes!r}")
        total, drawings, height, width = self.images.shape
        steps = self.classes * self.per_class
        # uniform subsets without replacement, in random order: the k largest of uniform keys
        picked = torch.rand(num_episodes, total, generator=generator).topk(self.classes, dim=1).indices
        keys = torch.rand(num_episodes, self.classes, drawings, generator=generator)
        which = keys.topk(self.per_class, dim=2).indices
        x = self.images[picked[..., None], which].reshape(num_episodes, steps, height, width)
        y = torch.arange(self.classes).repeat_interleave(self.per_class).expand(num_episodes, steps)
        order = torch.rand(num_episodes, steps, generator=generator).argsort(dim=1)  # a random order
        x = x.gather(1, order[..., None, None].expand(-1, -1, height, width))
        return x.unsqueeze(2).float().div_(255), y.gather(1, order)
