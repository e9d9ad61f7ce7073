"""Episodes for sequence learners (MANN): classes drawn at random, several drawings of each,
shown one at a time in a random order, by tensor indexing alone."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import MetakitError


class SequenceEpisodes:
    """`classes` classes a episode, `per_class` drawings of each (L = classes x per_class steps).
    Labels are a fresh random assignment in every episode (label i is the i-th class drawn).

    images: uint8 [classes, drawings, H, W], 255 = ink (e.g. Omniglot.images).
    sample(B) -> (x float [B, L, 1, H, W] in [0, 1] with ink = 1, y long [B, L]).
    shift (pixels) and rotate (degrees): each image moved and turned by up to that much, drawn
    uniformly per image (Santoro et al. augment their training data so; 0: the images as they are)."""

    def __init__(self, images: torch.Tensor, classes: int = 5, per_class: int = 10, shift: float = 0.0,
                 rotate: float = 0.0):
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
        for name, value in (("shift", shift), ("rotate", rotate)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 180:
                raise MetakitError(f"{name} must be a number in [0, 180), got {value!r}")
        self.images, self.classes, self.per_class = images, classes, per_class
        self.shift, self.rotate = float(shift), float(rotate)

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
        x = x.unsqueeze(2).float().div_(255)
        if self.shift or self.rotate:
            x = self._move(x.flatten(0, 1), generator).view_as(x)
        return x, y.gather(1, order)

    def _move(self, x: torch.Tensor, generator) -> torch.Tensor:
        """[N, 1, H, W]: each image rotated about its centre and shifted, bilinear, blank outside."""
        n, _, height, width = x.shape
        uniform = lambda *shape: torch.rand(*shape, generator=generator) * 2 - 1  # noqa: E731
        angle = torch.deg2rad(uniform(n) * self.rotate)
        # affine_grid's coordinates run over [-1, 1]: a pixel is 2 / size of them
        offset = uniform(n, 2) * self.shift * torch.tensor([2 / width, 2 / height])
        # affine_grid maps each output pixel to where it reads the input: the inverse rotation,
        # after undoing the shift, so the ink turns about the centre and then moves by `offset`
        cos, sin = angle.cos(), angle.sin()
        inverse = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # [N, 2, 2]
        theta = torch.cat([inverse, -(inverse @ offset[..., None])], 2)  # [N, 2, 3]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
