"""MANN (Santoro et al. 2016): an LSTM controller with an external memory written by Least
Recently Used Access, and the LSTM baseline without memory.

Both read an episode as a sequence: at step t the image x_t with the one-hot label of step
t - 1 (the label arrives one step late), and predict y_t. Per step, for each of R heads with
key k (from the controller's output h):

    w_w = sigmoid(alpha) w_r(t-1) + (1 - sigmoid(alpha)) w_lu(t-1)   write weights
    M   = M with its least-used slot emptied, + sum_heads w_w k^T        write
    w_r = softmax_slots(beta cosine(k, M(t-1)))                        read weights (M before the write)
    r   = w_r M                                                        read vector
    w_u = gamma w_u + sum_heads (w_r + w_w)                            usage
    w_lu = 1 on the R smallest usages                                  least used
    logits = W [h, r_1 .. r_R]

With `bind_writes` the write holds the previous step's image and label, and the read is taken
after it. beta = 1 in the paper; `key_strength=True` learns it per head (1 + softplus), as the NTM does.
The controller also reads the previous step's read vectors, as in the NTM. The memory and
every weighting start afresh with each episode (each call).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import MetakitError
from ..nets import Conv4


def check_episode(x: torch.Tensor, y: torch.Tensor, image_size: int, classes: int) -> None:
    """x float [B, L, 1, H, W] in [0, 1], y long [B, L] in [0, classes)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 5 or x.shape[2:] != (1, image_size, image_size):
        raise MetakitError(f"x must be [episodes, steps, 1, {image_size}, {image_size}] images, got "
                           f"{tuple(getattr(x, 'shape', ()))}")
    if not x.is_floating_point():
        raise MetakitError(f"x must be floating point in [0, 1] (ink = 1), got {x.dtype}")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.long or y.shape != x.shape[:2]:
        raise MetakitError(f"y must be long labels [episodes, steps] = {tuple(x.shape[:2])} like x, got "
                           f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
    if y.numel() and (y.min() < 0 or y.max() >= classes):
        raise MetakitError(f"labels must be in [0, {classes}), got values in "
                           f"[{int(y.min())}, {int(y.max())}]")


def check_sizes(owner: str, **sizes) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MetakitError(f"{owner} {name} must be an integer >= 1, got {value!r}")


def previous_labels(y: torch.Tensor, classes: int) -> torch.Tensor:
    """[B, L] -> [B, L, classes]: at step t the one-hot label of step t - 1 (zeros at t = 0)."""
    one_hot = F.one_hot(y, classes).float()
    return torch.cat([torch.zeros_like(one_hot[:, :1]), one_hot[:, :-1]], dim=1)


ENCODERS = ("pixels", "conv", "pixels+conv", "conv4")


class ImageEncoder(nn.Module):
    """[B, L, 1, H, W] -> [B, L, features]: `pixels`, the flattened image (the paper); `conv`,
    three 3x3 convolutions of stride 2 with ReLU (strides, not pooling: 6x faster here) and a
    layer norm, each image on its own (a batch norm's statistics would mix an episode's steps);
    `pixels+conv`, both side by side. The conv features start at a tenth of the layer norm's
    scale. Measured on Omniglot (training accuracy, chance plateau ~0.3): at full scale MANN with
    pixels + conv was still on the plateau after 1,200 updates, at a tenth it reached 0.46 at 800
    (pixels alone 0.56); conv alone had not left it after 2,500 updates (or 800 at a tenth).
    `conv4`: the few-shot conv-4 embedding (`embedding`, max pooling, batch norm with running
    statistics), then a layer norm; meant to be trained first as a prototypical network and
    then frozen (`freeze`), after which it always normalises with its running statistics."""

    def __init__(self, image_size: int, kind: str = "pixels", channels: int = 32):
        super().__init__()
        if kind not in ENCODERS:
            raise MetakitError(f"encoder must be one of {list(ENCODERS)}, got {kind!r}")
        check_sizes("the image encoder", channels=channels)
        self.kind, self.frozen = kind, False
        if kind == "pixels":
            self.net, self.features = nn.Flatten(), image_size**2
            return
        if kind == "conv4":
            self.embedding = Conv4(1, None, channels, image_size, strided=False, track_running_stats=True)
            self.features = channels * (image_size // 16) ** 2
            self.net = nn.Sequential(self.embedding, nn.LayerNorm(self.features))
            return
        layers, size, width = [], image_size, 1
        for _ in range(3):
            layers += [nn.Conv2d(width, channels, 3, stride=2, padding=1), nn.ReLU()]
            size, width = (size + 1) // 2, channels
        self.features = channels * size * size
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.LayerNorm(self.features))
        nn.init.constant_(self.net[-1].weight, 0.1)  # features start small beside the pixels
        if kind == "pixels+conv":
            self.features += image_size**2

    def freeze(self) -> None:
        """Stop training the conv-4 embedding: no gradients, running statistics from now on."""
        if self.kind != "conv4":
            raise MetakitError(f"only the conv4 encoder can be frozen, this one is {self.kind!r}")
        self.frozen = True
        self.embedding.requires_grad_(False)
        self.embedding.eval()
        # channels-last weights: the frozen forward of an update's 800 images took 131 ms instead of
        # 230 on this project's CPU (the same features to rounding)
        self.embedding.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.embedding.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.net(x.flatten(0, 1)).view(*x.shape[:2], -1)
        return torch.cat([x.flatten(2), features], -1) if self.kind == "pixels+conv" else features


EMPTY = 1e-6  # what a fresh or erased slot holds in each entry: a direction, unlike zeros


class LRUAMemory(nn.Module):
    """The memory of one batch of episodes and its Least Recently Used Access (no parameters
    but gamma; the controller gives keys and gates)."""

    def __init__(self, slots: int, slot_size: int, reads: int, gamma: float):
        super().__init__()
        if not 0 <= gamma <= 1:
            raise MetakitError(f"gamma (the usage decay) must be in [0, 1], got {gamma!r}")
        if reads > slots:
            raise MetakitError(f"reads ({reads}) cannot exceed the memory's slots ({slots})")
        self.slots, self.slot_size, self.reads, self.gamma = slots, slot_size, reads, gamma

    def initial_state(self, batch: int, device, dtype) -> dict[str, torch.Tensor]:
        first = torch.zeros(batch, self.reads, self.slots, device=device, dtype=dtype)
        first[..., 0] = 1.0  # read weights start on slot 0
        least_used = torch.zeros(batch, self.slots, device=device, dtype=dtype)
        least_used[:, :self.reads] = 1.0
        return {"memory": torch.full((batch, self.slots, self.slot_size), EMPTY, device=device, dtype=dtype),
                "read_weights": first, "usage": torch.zeros(batch, self.slots, device=device, dtype=dtype),
                "least_used": least_used}

    def step(self, state: dict, keys: torch.Tensor, gates: torch.Tensor,
             strengths: torch.Tensor | None = None, writes: torch.Tensor | None = None,
             read_after_write: bool = False):
        """keys [B, R, slot_size], gates [B, R] (sigmoid(alpha)); optional strengths [B, R] (the paper:
        a plain softmax of cosines) and write vectors [B, R, slot_size] (the paper writes the key)
        -> (reads [B, R, slot_size], state)."""
        gates = gates[..., None]
        write_weights = gates * state["read_weights"] + (1 - gates) * state["least_used"][:, None]
        # before writing, the least used slot is emptied: set to the fresh memory's EMPTY (the
        # paper zeroes it; EMPTY has a direction to compare with, and an emptied slot then ties
        # exactly with a fresh one instead of a 1e-6 cosine apart, which rounding could flip)
        erase = F.one_hot(state["usage"].argmin(-1), self.slots).to(keys.dtype)
        written = keys if writes is None else writes
        # products summed elementwise rather than by batched matmuls: those round a slot's result
        # by where it falls in the kernel's blocks, so two slots holding the same contents (tied
        # in usage, as every fresh slot is) came out an ulp apart in a batch and not alone, and
        # the least-used slot chosen, so an episode's outputs, depended on its batch-mates
        writes_in = (write_weights[..., None] * written[:, :, None]).sum(1)  # [B, slots, slot_size]
        memory = state["memory"] * (1 - erase)[..., None] + EMPTY * erase[..., None] + writes_in
        # the key is compared with the memory as it was before this step's write: it looks up what
        # earlier steps stored (against the new memory it would find its own write, cosine 1).
        # read_after_write: for writes that hold an earlier step's pair (bind_writes), which the key
        # must be able to find at once when the class comes twice in a row
        looked_up = F.normalize(memory if read_after_write else state["memory"], dim=-1, eps=1e-8)
        keys_unit = F.normalize(keys, dim=-1, eps=1e-8)
        cosine = (keys_unit[:, :, None] * looked_up[:, None]).sum(-1)  # [B, R, slots]
        if strengths is not None:  # the NTM's key strength: cosines alone give near-flat reads
            cosine = strengths[..., None] * cosine
        read_weights = cosine.softmax(-1)  # [B, R, slots]
        usage = self.gamma * state["usage"] + read_weights.sum(1) + write_weights.sum(1)
        smallest = usage.topk(self.reads, dim=-1, largest=False).indices
        least_used = torch.zeros_like(usage).scatter_(-1, smallest, 1.0)
        state = {"memory": memory, "read_weights": read_weights, "usage": usage, "least_used": least_used}
        return read_weights @ memory, state


class MANN(nn.Module):
    """model(x, y) -> logits [B, L, classes]; step t sees labels up to t - 1 only."""

    def __init__(self, image_size: int = 20, classes: int = 5, controller_size: int = 200, slots: int = 128,
                 slot_size: int = 40, reads: int = 4, gamma: float = 0.95, key_strength: bool = False,
                 write_vector: bool = False, encoder: str = "pixels", encoder_channels: int = 32,
                 input_keys: bool = False, bind_writes: bool = False):
        super().__init__()
        check_sizes("MANN", image_size=image_size, classes=classes, controller_size=controller_size,
                    slots=slots, slot_size=slot_size, reads=reads)
        self.image_size, self.classes, self.reads, self.slot_size = image_size, classes, reads, slot_size
        self.memory = LRUAMemory(slots, slot_size, reads, gamma)
        self.encoder = ImageEncoder(image_size, encoder, encoder_channels)
        self.controller = nn.LSTMCell(self.encoder.features + classes + reads * slot_size, controller_size)
        # input_keys: keys and write vectors read the step's input (image features, previous label)
        # beside the controller's output, not only through it; bind_writes: write vectors read the
        # previous step's image features and the label that has just arrived, the pair to bind, and
        # keys then read the memory after this step's write (the pair of a class shown the step
        # before is already there; validation 2nd presentation 90.9 against 78.8 reading before,
        # docs/mann.md) (deviations, off by default)
        if bind_writes and not write_vector:
            raise MetakitError("bind_writes shapes the write vectors: it needs write_vector=True")
        self.input_keys, self.bind_writes = input_keys, bind_writes
        addressing = controller_size + (self.encoder.features + classes) * input_keys
        writing = controller_size + (self.encoder.features + classes) * (input_keys or bind_writes)
        self.keys = nn.Linear(addressing, reads * slot_size)
        self.gates = nn.Linear(controller_size, reads)  # alpha of each head
        # beta of each head, 1 + softplus (a deviation from the paper, off by default)
        self.strengths = nn.Linear(controller_size, reads) if key_strength else None
        # what each head writes, apart from its read key (the NTM's add vector; the paper writes the key)
        self.writes = nn.Linear(writing, reads * slot_size) if write_vector else None
        self.output = nn.Linear(controller_size + reads * slot_size, classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_episode(x, y, self.image_size, self.classes)
        batch, steps = y.shape
        features = self.encoder(x)
        inputs = torch.cat([features, previous_labels(y, self.classes)], -1)  # [B, L, in]
        if self.bind_writes:  # step t binds x_{t-1}'s features (zeros at the first step)
            previous_features = torch.cat([torch.zeros_like(features[:, :1]), features[:, :-1]], 1)
        state = self.memory.initial_state(batch, x.device, x.dtype)  # a fresh memory per episode
        reads = x.new_zeros(batch, self.reads * self.slot_size)
        hidden = None
        logits = []
        for t in range(steps):
            hidden = self.controller(torch.cat([inputs[:, t], reads], -1), hidden)
            h = hidden[0]
            address = torch.cat([h, inputs[:, t]], -1) if self.input_keys else h
            keys = torch.tanh(self.keys(address)).view(batch, self.reads, self.slot_size)
            strengths = 1 + F.softplus(self.strengths(h)) if self.strengths is not None else None
            if self.bind_writes:  # x_{t-1}'s features with y_{t-1}, which arrives at step t
                address = torch.cat([h, previous_features[:, t], inputs[:, t, -self.classes:]], -1)
            writes = None if self.writes is None else torch.tanh(self.writes(address)).view_as(keys)
            read, state = self.memory.step(state, keys, torch.sigmoid(self.gates(h)), strengths, writes,
                                           read_after_write=self.bind_writes)
            reads = read.flatten(1)
            logits.append(self.output(torch.cat([h, reads], -1)))
        return torch.stack(logits, dim=1)


class LSTMBaseline(nn.Module):
    """The same input and controller size, no external memory: model(x, y) -> logits."""

    def __init__(self, image_size: int = 20, classes: int = 5, controller_size: int = 200,
                 encoder: str = "pixels", encoder_channels: int = 32):
        super().__init__()
        check_sizes("LSTMBaseline", image_size=image_size, classes=classes, controller_size=controller_size)
        self.image_size, self.classes = image_size, classes
        self.encoder = ImageEncoder(image_size, encoder, encoder_channels)
        self.lstm = nn.LSTM(self.encoder.features + classes, controller_size, batch_first=True)
        self.output = nn.Linear(controller_size, classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_episode(x, y, self.image_size, self.classes)
        features, _ = self.lstm(torch.cat([self.encoder(x), previous_labels(y, self.classes)], -1))
        return self.output(features)
