from __future__ import annotations

from torch import nn

from ..errors import MetakitError


class Conv4(nn.Module):
    """The 4-block conv net of few-shot learning: [3x3 conv, BatchNorm, ReLU] x 4, then linear.

    `strided=True` is Finn et al.'s Omniglot variant (stride-2 convolutions, no pooling);
    False is the max-pool variant (stride 1, 2x2 max pooling). `track_running_stats=False`
    normalises with the statistics of the batch at hand (the papers' transductive setting).
    """

    def __init__(self, in_channels: int = 1, num_classes: int | None = 5, hidden: int = 64,
                 image_size: int = 28, strided: bool = True, track_running_stats: bool = False):
        super().__init__()
        if image_size < 16:
            raise MetakitError(f"Conv4 needs images of at least 16x16 pixels, got image_size={image_size}")
        blocks = []
        channels, size = in_channels, image_size
        for _ in range(4):
            conv = nn.Conv2d(channels, hidden, 3, stride=2 if strided else 1, padding=1)
            blocks += [conv, nn.BatchNorm2d(hidden, track_running_stats=track_running_stats), nn.ReLU()]
            if not strided:
                blocks.append(nn.MaxPool2d(2))
            # stride 2 with padding 1 rounds up; 2x2 max pooling rounds down
            channels, size = hidden, (size + 1) // 2 if strided else size // 2
        self.features = nn.Sequential(*blocks, nn.Flatten())
        # num_classes=None: an embedding network (metric learning), features out
        self.head = nn.Identity() if num_classes is None else nn.Linear(hidden * size * size, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
