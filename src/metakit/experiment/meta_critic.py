"""Meta-Critic Networks (metakit.rl.meta_critic) as an experiment: sine regression, the
paper's supervised setting (y = A sin(x + b), A ~ U[1, 5], b ~ U[0, pi], x ~ U[-5, 5]).

One runner iteration is one of the authors' training episodes: fresh actors for the current
batch of tasks (renewed every train.renew_every episodes), then train.steps steps in which
the TAEN reads the previous step's K labelled pairs, each actor ascends the critic on new
inputs, and MVN + TAEN regress -(y - y_hat)^2. Evaluation trains fresh actors for unseen
tasks against the frozen critic, beside an actor trained from scratch on the K labelled
points, metakit's MAML on the same task distribution, and the critic with z fixed to 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import distributed
from ..gradient import MAML
from ..nets import MLP
from ..rl.meta_critic import (
    BatchedMLP,
    MetaCritic,
    critic_regression_step,
    regression_actor_step,
    train_regression_actors,
)
from ..tasks import Sinusoid
from .config import check, non_negative, positive
from .evaluate import mean_ci95, progress_bar
from .protocol import Algorithm

SETTINGS = ["sine"]
pair = (lambda v: len(v) == 2 and v[0] <= v[1], "[low, high] with low <= high")


@dataclass
class SineTaskConfig:
    name: str = check(lambda v: v in SETTINGS, f"one of {SETTINGS}", default="sine")
    amplitude: list[float] = check(*pair, default_factory=lambda: [1.0, 5.0])
    phase: list[float] = check(*pair, default_factory=lambda: [0.0, math.pi])  # y = A sin(x + phase)
    x_range: list[float] = check(*pair, default_factory=lambda: [-5.0, 5.0])
    shots: int = check(*positive, default=10)  # K: labelled pairs the TAEN reads, inputs per actor step


@dataclass
class MetaCriticSection:
    name: str = check(lambda v: v == "meta-critic", "'meta-critic'", default="meta-critic")
    actor_lr: float = check(*positive, default=0.01)  # Adam, each task's actor
    critic_lr: float = check(*positive, default=1e-3)  # Adam, MVN and TAEN
    hidden_size: int = check(*positive, default=80)  # MVN
    encoder_size: int = check(*positive, default=30)  # TAEN's LSTM
    z_size: int = check(*positive, default=3)


@dataclass
class MetaCriticTrainConfig:
    iterations: int = check(*positive, default=1000)  # episodes
    num_tasks: int = check(*positive, default=100)
    steps: int = check(*positive, default=300)  # actor and critic steps per episode
    renew_every: int = check(*positive, default=10)  # episodes between new batches of tasks
    log_every: int = check(*positive, default=10)
    checkpoint_every: int = check(*positive, default=50)


@dataclass
class MetaCriticEvalConfig:
    num_tasks: int = check(*positive, default=100)
    shots: list[int] = check(lambda v: len(v) > 0 and min(v) >= 1, "shots >= 1",
                             default_factory=lambda: [4, 6, 8])
    test_points: int = check(*positive, default=100)
    steps: int = check(*non_negative, default=300)  # actor steps at meta-test (and for the scratch actor)
    unlabelled: int = check(*positive, default=10)  # fresh unlabelled inputs per meta-test step
    maml_iterations: int = check(*non_negative, default=5000)  # the MAML baseline's meta-training
    maml_steps: int = check(*non_negative, default=10)  # its adaptation steps at test
    seed: int = 1234


@dataclass
class MetaCriticConfig:
    name: str = "meta-critic-sine"
    seed: int = 0
    task: SineTaskConfig = field(default_factory=SineTaskConfig)
    algorithm: MetaCriticSection = field(default_factory=MetaCriticSection)
    train: MetaCriticTrainConfig = field(default_factory=MetaCriticTrainConfig)
    eval: MetaCriticEvalConfig = field(default_factory=MetaCriticEvalConfig)


class CriticTraining(Algorithm):
    """What the RL settings keep between episodes: the critic (MVN and TAEN), its optimiser,
    the episode count and the current batch of tasks (actors are fresh every episode)."""

    shard_key = "train.num_tasks"  # under torchrun each rank trains its share of the tasks' actors

    def state_dict(self):
        return {"critic": self.critic.state_dict(), "optimizer": self.optimizer.state_dict(),
                "episode": self.episode, "tasks": self.tasks}

    def load_state_dict(self, state):
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.episode, self.tasks = state["episode"], state["tasks"]


class MetaCriticExperiment(Algorithm):
    Config = MetaCriticConfig
    named_sections = {"task": SETTINGS}
    curve = {"critic_loss": "critic's squared error", "actor_mse": "actors' MSE (last step)"}
    curve_ylabel = "episodes"
    curve_log_scale = True
    shard_key = "train.num_tasks"  # under torchrun each rank trains its share of the tasks' actors

    def __init__(self, config: MetaCriticConfig, device: str = "cpu"):
        super().__init__(config, device)
        torch.manual_seed(config.seed)  # the critic's initial weights
        a, t = config.algorithm, config.task
        self.critic = MetaCritic(2, 2, a.hidden_size, a.encoder_size, a.z_size).to(device)
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=a.critic_lr, fused=True)
        # the authors' y = A sin(x + b) is metakit's Sinusoid with phase -b
        self.sines = Sinusoid(t.shots, 1, tuple(t.amplitude), (-t.phase[1], -t.phase[0]), tuple(t.x_range))
        self.episode, self.tasks = 0, None

    def sample(self, tasks, points: int, generator):
        amplitude, phase = tasks
        x = self.sines.x_range[0] + (self.sines.x_range[1] - self.sines.x_range[0]) * distributed.rand(
            amplitude.shape[0], points, 1, generator=generator)  # task-first: the same on any number of ranks
        return x.to(self.device), Sinusoid.evaluate(amplitude, phase, x).to(self.device)

    def step(self, generator):
        train, shots = self.config.train, self.config.task.shots
        if self.episode % train.renew_every == 0 or self.tasks is None:
            self.tasks = self.sines.sample_functions(train.num_tasks, generator)
        # under torchrun each rank trains the actors of its share of the tasks (drawn task-first)
        # and the critic steps average its gradients over the ranks: one process's episode
        with distributed.task_share(train.num_tasks):
            tasks = tuple(distributed.shard(t) for t in self.tasks)
            actors = BatchedMLP(tasks[0].shape[0], [1, 40, 40, 1], generator).to(self.device)
            lr = self.config.algorithm.actor_lr
            actor_optimizer = torch.optim.Adam(actors.parameters(), lr=lr, fused=True)
            history = torch.cat(self.sample(tasks, shots, generator), -1)  # [T, K, (x, y)]
            for _ in range(train.steps):
                x, y = self.sample(tasks, shots, generator)
                z = self.critic.encoder(history)  # the actor reads it detached; the critic step trains TAEN
                prediction = regression_actor_step(self.critic, actors, actor_optimizer, x, z)
                inputs, targets = torch.cat([x, prediction], -1), -(y - prediction).square().squeeze(-1)
                critic_loss = critic_regression_step(self.critic, self.optimizer, inputs, z, targets)
                history = torch.cat([x, y], -1)  # the next step's encoder reads this step's pairs
        self.episode += 1
        actor_mse = distributed.average(F.mse_loss(prediction, y).detach())
        return {"critic_loss": critic_loss, "actor_mse": actor_mse}

    def state_dict(self):
        return {"critic": self.critic.state_dict(), "optimizer": self.optimizer.state_dict(),
                "episode": self.episode, "tasks": None if self.tasks is None else list(self.tasks)}

    def load_state_dict(self, state):
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.episode, self.tasks = state["episode"], None if state["tasks"] is None else tuple(state["tasks"])

    def maml_baseline(self) -> MAML:
        """metakit's MAML (1-40-40-1, one inner step of 0.01, Adam 1e-3, 25 tasks a batch) on
        the same task distribution, with K = the largest test shot count."""
        ev = self.config.eval
        generator = torch.Generator().manual_seed(ev.seed + 7)
        torch.manual_seed(ev.seed + 7)
        maml = MAML(MLP(1, [40, 40], 1), F.mse_loss, inner_lr=0.01, inner_steps=1).to(self.device)
        tasks = Sinusoid(max(ev.shots), 10, self.sines.amplitude, self.sines.phase, self.sines.x_range)
        optimizer = torch.optim.Adam(maml.parameters(), lr=1e-3)
        for _ in range(ev.maml_iterations):
            optimizer.zero_grad()
            maml.meta_loss(tasks.sample(25, generator).to(self.device)).backward()
            optimizer.step()
        return maml

    def evaluate(self) -> dict:
        ev = self.config.eval
        maml = self.maml_baseline()
        mse, ci95 = {}, {}
        bar = progress_bar(len(ev.shots), "meta-testing on unseen tasks", self.progress)
        for shots in ev.shots:
            generator = torch.Generator().manual_seed(ev.seed + shots)
            tasks = self.sines.sample_functions(ev.num_tasks, generator)
            support_x, support_y = self.sample(tasks, shots, generator)
            test_x, test_y = self.sample(tasks, ev.test_points, generator)
            with torch.no_grad():
                z = self.critic.encoder(torch.cat([support_x, support_y], -1))

            def unlabelled(g):
                return self.sample(tasks, ev.unlabelled, g)[0]

            errors = {}
            lr = self.config.algorithm.actor_lr
            for label, code in (("meta-critic", z), ("meta-critic-z0", torch.zeros_like(z))):
                actors = train_regression_actors(self.critic, code, unlabelled, ev.steps, lr,
                                                 torch.Generator().manual_seed(ev.seed))
                with torch.no_grad():
                    errors[label] = (actors(test_x) - test_y).square().mean((1, 2))
            errors["scratch"] = self.scratch(support_x, support_y, test_x, test_y)
            fast = maml.adapt(support_x, support_y, steps=ev.maml_steps)
            with torch.no_grad():
                errors["maml"] = (maml.predict(fast, test_x) - test_y).square().mean((1, 2))
            mse[str(shots)], ci95[str(shots)] = {}, {}
            for label, values in errors.items():
                mse[str(shots)][label], ci95[str(shots)][label] = mean_ci95(values.cpu())
            bar.update()
        bar.close()
        return {"mse": mse, "ci95": ci95, "eval_tasks": ev.num_tasks, "test_points": ev.test_points,
                "meta_test_steps": ev.steps, "maml_iterations": ev.maml_iterations}

    def scratch(self, support_x, support_y, test_x, test_y) -> torch.Tensor:
        """Fresh actors (the same initial weights as the meta-critic's) trained by Adam on the
        K labelled points for eval.steps steps: test MSE per task."""
        ev = self.config.eval
        actors = BatchedMLP(support_x.shape[0], [1, 40, 40, 1], torch.Generator().manual_seed(ev.seed))
        actors.to(self.device)
        optimizer = torch.optim.Adam(actors.parameters(), lr=self.config.algorithm.actor_lr)
        for _ in range(ev.steps):
            optimizer.zero_grad()
            (actors(support_x) - support_y).square().mean((1, 2)).sum().backward()
            optimizer.step()
        with torch.no_grad():
            return (actors(test_x) - test_y).square().mean((1, 2))
