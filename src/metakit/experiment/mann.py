"""MANN and its LSTM baseline (metakit.memory) as experiments: Omniglot episodes of 5 classes x
10 drawings read as sequences, accuracy by the presentation number of each class."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import distributed
from ..batch import TaskBatch
from ..data.omniglot import MINIMAL
from ..errors import MetakitError
from ..memory import MANN, LSTMBaseline
from ..memory.mann import ENCODERS
from ..metric import PrototypicalNetwork
from ..tasks import SequenceEpisodes
from .builders import omniglot_split
from .config import check, non_negative, positive
from .evaluate import mean_ci95, progress_bar
from .protocol import Algorithm

NAMES = ["lstm", "mann"]
MEMORY = ("mann",)
SCHEDULES = ("constant", "cosine")


@dataclass
class SequenceTaskConfig:
    name: str = check(lambda v: v == "omniglot", "'omniglot'", default="omniglot")
    classes: int = check(lambda v: v >= 2, ">= 2", default=5)  # per episode
    per_class: int = check(*positive, default=10)  # drawings of each class in an episode
    image_size: int = check(lambda v: v >= 4, ">= 4", default=20)
    archives: list[str] = field(default_factory=lambda: list(MINIMAL))
    rotations: bool = True  # 90/180/270-degree rotations of the training classes as new classes
    reflections: bool = False  # mirror images of the training classes (and their rotations) as new classes
    # training images moved by up to `shift` pixels and turned by up to `rotate` degrees, anew each
    # episode (Santoro et al.'s augmentation; the test episodes are never moved)
    shift: float = check(lambda v: 0 <= v < 180, "in [0, 180)", default=0.0)
    rotate: float = check(lambda v: 0 <= v < 180, "in [0, 180)", default=0.0)
    validation_alphabets: list[str] = field(default_factory=list)
    test_alphabets: list[str] = field(default_factory=list)


@dataclass
class SequenceSection:
    name: str = check(lambda v: v in NAMES, f"one of {NAMES}", default="mann")
    lr: float = check(*positive, default=1e-3)  # Adam
    # "constant", or "cosine": from lr down to 0 over train.iterations (half a cosine; a finished
    # run resumed with more iterations then climbs back onto the longer run's curve)
    lr_schedule: str = check(lambda v: v in SCHEDULES, f"one of {list(SCHEDULES)}", default="constant")
    grad_clip: float = check(*positive, default=10.0)  # the gradient's norm is clipped to this
    controller_size: int = check(*positive, default=200)  # LSTM units (both models)
    slots: int = check(*positive, only=MEMORY, default=128)
    slot_size: int = check(*positive, only=MEMORY, default=40)
    reads: int = check(*positive, only=MEMORY, default=4)
    gamma: float = check(lambda v: 0 <= v <= 1, "in [0, 1]", only=MEMORY, default=0.95)  # usage decay
    key_strength: bool = check(lambda v: isinstance(v, bool), "true or false", only=MEMORY,
                               default=False)  # a learned sharpness of the reads (the NTM's beta)
    write_vector: bool = check(lambda v: isinstance(v, bool), "true or false", only=MEMORY,
                               default=False)  # write a vector of its own, not the read key (the NTM's)
    # keys and write vectors also read the step's input directly, beside the controller's output
    input_keys: bool = check(lambda v: isinstance(v, bool), "true or false", only=MEMORY, default=False)
    # write vectors read the previous image's features and the label that has just arrived
    bind_writes: bool = check(lambda v: isinstance(v, bool), "true or false", only=MEMORY, default=False)
    # what the recurrence reads of each image (both models): "pixels" (the paper's), "conv" or
    # "pixels+conv" (the bundled configs': memory/mann.py's ImageEncoder)
    encoder: str = check(lambda v: v in ENCODERS, f"one of {list(ENCODERS)}", default="pixels")
    encoder_channels: int = check(*positive, default=32)  # the conv encoder's width
    # the conv4 encoder's first updates: trained alone as a prototypical network (Snell et al.) on
    # `pretrain_ways`-way episodes of the training classes, one drawing of each class the support and
    # `pretrain_queries` the queries; then frozen for the rest of train.iterations (0: trained with
    # the recurrence from the start, its batch norm then normalising over the whole batch of episodes)
    pretrain_iterations: int = check(*non_negative, default=0)
    pretrain_ways: int = check(lambda v: v >= 2, ">= 2", default=60)
    pretrain_queries: int = check(*positive, default=5)


@dataclass
class SequenceTrainConfig:
    iterations: int = check(*positive, default=5000)
    meta_batch_size: int = check(*positive, default=16)  # episodes per update
    log_every: int = check(*positive, default=100)
    checkpoint_every: int = check(*positive, default=500)
    validate_every: int = check(*non_negative, default=0)  # 2nd and last presentations on validation


@dataclass
class SequenceEvalConfig:
    num_episodes: int = check(*positive, default=1000)
    seed: int = 1234
    instances: list[int] = check(lambda v: all(i >= 1 for i in v), "instances >= 1",
                                 default_factory=lambda: [1, 2, 3, 4, 5, 10])


@dataclass
class SequenceConfig:
    name: str = "omniglot-mann"
    seed: int = 0
    task: SequenceTaskConfig = field(default_factory=SequenceTaskConfig)
    algorithm: SequenceSection = field(default_factory=SequenceSection)
    train: SequenceTrainConfig = field(default_factory=SequenceTrainConfig)
    eval: SequenceEvalConfig = field(default_factory=SequenceEvalConfig)


def instance_numbers(y: torch.Tensor, classes: int) -> torch.Tensor:
    """[B, L] -> [B, L]: 1 where a class appears for the first time in its episode, 2 the second..."""
    one_hot = F.one_hot(y, classes)
    return (one_hot.cumsum(1) * one_hot).sum(-1)


def accuracy_by_instance(correct: torch.Tensor, instances: torch.Tensor, wanted: list[int]) -> dict:
    """Percent correct at each wanted presentation number: (means, 95% CIs over episodes)."""
    means, cis = {}, {}
    for k in wanted:
        at_k = (instances == k).float()
        per_episode = (correct.float() * at_k).sum(1) / at_k.sum(1).clamp_min(1)
        mean, ci = mean_ci95(100 * per_episode[at_k.sum(1) > 0])
        means[str(k)], cis[str(k)] = mean, ci
    return means, cis


def nearest_neighbour(x: torch.Tensor, y: torch.Tensor, classes: int, generator=None) -> torch.Tensor:
    """Online 1-NN on pixels: each step's prediction is the label of the closest earlier image of
    the episode (a uniform guess at the first step). [B, L] predictions."""
    flat = x.flatten(2)
    distances = torch.cdist(flat, flat)  # [B, L, L]
    steps = y.shape[1]
    later = torch.ones(steps, steps, dtype=torch.bool).triu()  # t' >= t is not seen yet at step t
    nearest = distances.masked_fill(later, float("inf")).argmin(-1)
    guess = torch.randint(classes, y[:, :1].shape, generator=generator)
    return torch.cat([guess, y.gather(1, nearest)[:, 1:]], dim=1)


class SequenceExperiment(Algorithm):
    Config = SequenceConfig
    named_sections = {"task": ["omniglot"]}
    curve = {"loss": "cross-entropy per step", "accuracy": "training accuracy",
             "pretrain_loss": "the encoder's prototypical loss", "pretrain_accuracy": "its query accuracy"}
    curve_ylabel = "training episodes"
    shard_key = "train.meta_batch_size"  # under torchrun each rank runs its share of the episodes

    def __init__(self, config: SequenceConfig, device: str = "cpu"):
        super().__init__(config, device)
        torch.manual_seed(config.seed)  # the model's initial weights
        task, algo = config.task, config.algorithm
        self.episodes = SequenceEpisodes(omniglot_split(config, "train"), task.classes, task.per_class,
                                         task.shift, task.rotate)
        if algo.name == "mann":
            self.model = MANN(task.image_size, task.classes, algo.controller_size, algo.slots, algo.slot_size,
                              algo.reads, algo.gamma, algo.key_strength, algo.write_vector, algo.encoder,
                              algo.encoder_channels, algo.input_keys, algo.bind_writes)
        else:
            self.model = LSTMBaseline(task.image_size, task.classes, algo.controller_size, algo.encoder,
                                      algo.encoder_channels)
        self.model.to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=algo.lr)
        self.updates = 0  # taken so far, for the learning-rate schedule (checkpointed)
        if pretrain := algo.pretrain_iterations:
            if algo.encoder != "conv4":
                raise MetakitError(f"algorithm.pretrain_iterations ({pretrain}) pretrains the conv4 encoder; "
                                   f"algorithm.encoder is {algo.encoder!r}")
            if pretrain >= config.train.iterations:
                raise MetakitError(f"algorithm.pretrain_iterations ({pretrain}) must be below "
                                   f"train.iterations ({config.train.iterations}): the rest trains the model")
            self.prototypes = PrototypicalNetwork(self.model.encoder.embedding)
            self.pretrain_episodes = SequenceEpisodes(self.episodes.images, algo.pretrain_ways,
                                                      1 + algo.pretrain_queries, task.shift, task.rotate)

    def learning_rate(self) -> float:
        algo = self.config.algorithm
        if algo.lr_schedule == "constant":
            return algo.lr
        return algo.lr * 0.5 * (1 + math.cos(math.pi * min(self.updates / self.config.train.iterations, 1.0)))

    def pretraining(self) -> bool:
        return self.updates < self.config.algorithm.pretrain_iterations

    def step(self, generator):
        pretraining = self.pretraining()
        if pretraining:
            loss, accuracy = self.prototype_loss(generator)
        else:
            # every rank draws the whole batch and keeps its share; equal shares make the mean of the
            # ranks' mean gradients the whole batch's, clipped as one process clips it
            episodes = self.episodes.sample(self.config.train.meta_batch_size, generator)
            x, y = (distributed.shard(t).to(self.device) for t in episodes)
            logits = self.model(x, y)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            accuracy = (logits.argmax(-1) == y).float().mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(self.model.parameters())
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.algorithm.grad_clip)
        lr = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.updates += 1
        if self.updates == self.config.algorithm.pretrain_iterations:
            self.model.encoder.freeze()
        prefix = "pretrain_" if pretraining else ""
        return {prefix + "loss": distributed.average(loss.detach()),
                prefix + "accuracy": distributed.average(accuracy)}

    def prototype_loss(self, generator):
        """The conv4 encoder's pretraining: a prototypical network's loss on one episode of the
        training classes (the same on every rank: one episode does not shard)."""
        x, y = self.pretrain_episodes.sample(1, generator)
        support = instance_numbers(y, self.config.algorithm.pretrain_ways)[0] == 1  # one drawing a class
        batch = TaskBatch(x[:, support], y[:, support], x[:, ~support], y[:, ~support]).to(self.device)
        logits = self.prototypes.logits(batch)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
        return loss, (logits.argmax(-1) == batch.query_y).float().mean()

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "updates": torch.tensor(self.updates)}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "updates" in state:
            self.updates = int(state["updates"])
        else:  # a checkpoint from before the schedule existed: Adam's own step count is the same number
            adam = state["optimizer"]["state"]
            self.updates = int(next(iter(adam.values()))["step"]) if adam else 0
        if self.config.algorithm.pretrain_iterations and not self.pretraining():
            self.model.encoder.freeze()

    def extra_metrics(self, iteration: int) -> dict:
        every, last_update = self.config.train.validate_every, iteration == self.config.train.iterations
        if every and not self.pretraining() and (iteration % every == 0 or last_update):
            last = self.config.task.per_class
            means, _ = self.per_instance("validation", min(200, self.config.eval.num_episodes), [2, last])
            return {"val_accuracy_2nd": means["model"]["2"], "val_accuracy_last": means["model"][str(last)]}
        return {}

    @torch.no_grad()
    def per_instance(self, split: str, num_episodes: int, instances: list[int], chunk: int = 100):
        """Accuracy by presentation number on seeded episodes of `split`, for this model and the
        online nearest neighbour: ({"model": {k: %}, "nearest-neighbour": ...}, same for CIs)."""
        task, ev = self.config.task, self.config.eval
        episodes = SequenceEpisodes(omniglot_split(self.config, split), task.classes, task.per_class)
        x, y = episodes.sample(num_episodes, torch.Generator().manual_seed(ev.seed))
        was_training = self.model.training
        self.model.eval()
        predictions = []
        bar = progress_bar(-(-num_episodes // chunk), f"evaluating on {split} episodes", self.progress)
        for start in range(0, num_episodes, chunk):
            part_x, part_y = x[start:start + chunk].to(self.device), y[start:start + chunk].to(self.device)
            predictions.append(self.model(part_x, part_y).argmax(-1).cpu())
            bar.update()
        bar.close()
        self.model.train(was_training)
        instances_seen = instance_numbers(y, task.classes)
        guesses = nearest_neighbour(x, y, task.classes, torch.Generator().manual_seed(ev.seed + 1))
        means, cis = {}, {}
        for label, predicted in (("model", torch.cat(predictions)), ("nearest-neighbour", guesses)):
            means[label], cis[label] = accuracy_by_instance(predicted == y, instances_seen, instances)
        return means, cis

    def evaluate(self) -> dict:
        ev = self.config.eval
        means, cis = self.per_instance("test", ev.num_episodes, ev.instances)
        return {"accuracy_by_instance": means["model"], "ci95_by_instance": cis["model"],
                "nearest_neighbour_by_instance": means["nearest-neighbour"], "eval_episodes": ev.num_episodes,
                "test_alphabets": self.config.task.test_alphabets}

    def plots(self, run_dir: Path) -> None:
        from .plots import figure, integer_ticks, save  # noqa: PLC0415 (matplotlib only when plotting)

        means, _ = self.per_instance("test", min(200, self.config.eval.num_episodes),
                                     list(range(1, self.config.task.per_class + 1)))
        fig, ax = figure(figsize=(5, 4))
        for label, row in means.items():
            ax.plot([int(k) for k in row], list(row.values()), "o-", label=label)
        ax.set(xlabel="presentation of the class in the episode", ylabel="accuracy (%)",
               title=f"{self.config.algorithm.name}, held-out alphabets", ylim=(0, 100))
        integer_ticks(ax.xaxis)
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, Path(run_dir) / "accuracy_by_instance.png")
