"""Meta-Critic Networks (metakit.rl.meta_critic) on dependent-arm bandits: success
probabilities p ~ Dirichlet(1) over k arms (they sum to 1), the authors' bandit setting.

One runner iteration is one of the authors' training episodes: fresh actors (a constant input,
1-40-40-k, softmax over arms) for the current batch of tasks (renewed every
train.renew_every episodes), then train.steps steps. Each step the TAEN reads `pulls` (one-hot
a, r) pairs into z (the previous step's, as the authors did, or by default the fresh actor's
first pulls, which is what it reads at meta-test), every actor pulls `pulls` arms from its policy, MVN
+ TAEN regress Q(a, z) onto the rewards, and each actor ascends its expected critic value
sum_a pi(a) Q(a, z) (the authors ascend log pi(a) Q(a, z) on the sampled arms; the exact
expectation over k arms has no sampling noise).

Evaluation: for each unseen task, a fresh actor pulls `pulls` arms, the TAEN reads them, and
the actor learns from the frozen critic; the score is the expected reward sum_a pi(a) p_a of
the final policy. Baselines on the same tasks and the same number of pulls: the best arm, a
uniform policy, "pull each arm equally then commit to the best mean", Thompson sampling on the
Dirichlet prior (then commit to the arm of highest posterior mean), and the
same fresh actor trained by policy gradient on its own pulls without a critic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import distributed
from ..rl.envs.bandit import DirichletBandit
from ..rl.meta_critic import BatchedMLP, MetaCritic, sample_actions
from .config import check, non_negative, positive
from .evaluate import mean_ci95
from .meta_critic import CriticTraining, MetaCriticSection


@dataclass
class BanditTaskConfig:
    name: str = check(lambda v: v == "bandit", "'bandit'", default="bandit")
    arms: int = check(lambda v: v >= 2, ">= 2", default=4)
    pulls: int = check(*positive, default=10)  # per actor step, and what the TAEN reads
    # what the TAEN reads while meta-training: "previous", the previous step's pulls (the
    # authors), or "fresh", new pulls of the actor's initial policy every step (what it reads at
    # meta-test; a history that changes every step keeps the critic from using z as a task id)
    history: str = check(lambda v: v in ("previous", "fresh"), "'previous' or 'fresh'", default="fresh")


@dataclass
class BanditCriticSection(MetaCriticSection):
    actor_lr: float = check(*positive, default=1e-3)


@dataclass
class BanditTrainConfig:
    iterations: int = check(*positive, default=200)  # episodes
    num_tasks: int = check(*positive, default=50)
    steps: int = check(*positive, default=300)
    renew_every: int = check(*positive, default=10)
    log_every: int = check(*positive, default=10)
    checkpoint_every: int = check(*positive, default=20)


@dataclass
class BanditEvalConfig:
    num_tasks: int = check(*positive, default=1000)
    steps: int = check(*non_negative, default=300)  # actor steps at meta-test (and for the policy gradient)
    particles: int = check(*positive, default=4096)  # Thompson sampling's posterior
    seed: int = 1234


@dataclass
class BanditMetaCriticConfig:
    name: str = "meta-critic-bandit"
    seed: int = 0
    task: BanditTaskConfig = field(default_factory=BanditTaskConfig)
    algorithm: BanditCriticSection = field(default_factory=BanditCriticSection)
    train: BanditTrainConfig = field(default_factory=BanditTrainConfig)
    eval: BanditEvalConfig = field(default_factory=BanditEvalConfig)


class BanditMetaCritic(CriticTraining):
    Config = BanditMetaCriticConfig
    named_sections = {"task": ["bandit"]}
    curve = {"critic_loss": "critic's squared error", "reward": "actors' expected reward"}
    curve_ylabel = "episodes"

    def __init__(self, config: BanditMetaCriticConfig, device: str = "cpu"):
        super().__init__(config, device)
        torch.manual_seed(config.seed)
        a, k = config.algorithm, config.task.arms
        self.env = DirichletBandit(k)
        self.critic = MetaCritic(k, k + 1, a.hidden_size, a.encoder_size, a.z_size).to(device)
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=a.critic_lr)
        self.episode, self.tasks = 0, None

    def fresh_actors(self, num_tasks: int, generator):
        actors = BatchedMLP(num_tasks, [1, 40, 40, self.config.task.arms], generator).to(self.device)
        return actors, torch.optim.Adam(actors.parameters(), lr=self.config.algorithm.actor_lr, fused=True)

    def pull(self, tasks, logits, generator):
        """`pulls` arms per task from the policies of logits [T, k]: (one-hot arms [T, N, k],
        rewards [T, N]), on the critic's device; drawn on the CPU."""
        logits = logits.detach()[:, None].expand(-1, self.config.task.pulls, -1)
        arms = sample_actions(logits.cpu(), generator)
        return tuple(t.to(self.device) for t in bernoulli_pulls(tasks, arms, generator))

    def actor_step(self, actors, optimizer, z) -> None:
        """Each actor ascends sum_a pi(a) Q(a, z) under the (read-only) critic."""
        k = self.config.task.arms
        every_arm = torch.eye(k, device=z.device).expand(z.shape[0], k, k)
        with torch.no_grad():
            values = self.critic.value(every_arm, z)  # [T, k]
        optimizer.zero_grad(set_to_none=True)
        (-(torch.softmax(policy_logits(actors), -1) * values).sum()).backward()
        optimizer.step()

    def step(self, generator):
        train = self.config.train
        if self.episode % train.renew_every == 0 or self.tasks is None:
            self.tasks = self.env.sample_tasks(train.num_tasks, generator)
        # under torchrun each rank trains the actors of its share of the tasks (every draw made
        # task-first) and the critic steps average its gradients: one process's episode
        with distributed.task_share(train.num_tasks):
            tasks = distributed.shard(self.tasks)
            actors, actor_optimizer = self.fresh_actors(tasks.shape[0], generator)
            initial = policy_logits(actors).detach()
            history = torch.cat(pairs(*self.pull(tasks, initial, generator)), -1)
            losses = []
            for _ in range(train.steps):
                if self.config.task.history == "fresh":
                    history = torch.cat(pairs(*self.pull(tasks, initial, generator)), -1)
                z = self.critic.encoder(history)
                arms, rewards = self.pull(tasks, policy_logits(actors), generator)
                self.actor_step(actors, actor_optimizer, z.detach())
                loss = F.mse_loss(self.critic.value(arms, z), rewards)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.average_gradients(self.critic.parameters())  # equal shards: the batch's mean
                self.optimizer.step()
                losses.append(distributed.average(loss.detach()))
                if self.config.task.history == "previous":
                    history = torch.cat(pairs(arms, rewards), -1)
        self.episode += 1
        with torch.no_grad():
            reward = distributed.average(expected_reward(actors, tasks).mean())
        return {"critic_loss": sum(losses) / len(losses), "reward": reward}

    # -- meta-test -----------------------------------------------------------------------------
    def evaluate(self) -> dict:
        ev, k, n = self.config.eval, self.config.task.arms, self.config.task.pulls
        generator = torch.Generator().manual_seed(ev.seed)
        tasks = self.env.sample_tasks(ev.num_tasks, generator)
        actors, optimizer = self.fresh_actors(ev.num_tasks, generator)
        initial = {name: value.detach().clone() for name, value in actors.state_dict().items()}
        arms, rewards = self.pull(tasks, policy_logits(actors), generator)
        with torch.no_grad():
            z = self.critic.encoder(torch.cat(pairs(arms, rewards), -1))
        for _ in range(ev.steps):
            self.actor_step(actors, optimizer, z)
        expected = {"meta-critic": expected_reward(actors, tasks)}

        actors.load_state_dict(initial)  # the same actor and pulls, policy gradient without a critic
        optimizer = torch.optim.Adam(actors.parameters(), lr=self.config.algorithm.actor_lr, fused=True)
        advantages = rewards - rewards.mean(1, keepdim=True)
        for _ in range(ev.steps):
            log_pi = torch.log_softmax(policy_logits(actors), -1)[:, None]  # [T, 1, k]
            optimizer.zero_grad(set_to_none=True)
            (-((log_pi * arms).sum(-1) * advantages).mean(1).sum()).backward()
            optimizer.step()
        expected["policy-gradient"] = expected_reward(actors, tasks)
        expected["equal-pulls"] = equal_pulls_then_commit(tasks, n, generator)
        expected["thompson"] = thompson_then_commit(tasks, n, ev.particles, generator)
        expected["optimal"] = tasks.max(1).values
        expected["random"] = tasks.mean(1)
        reward, ci95, over_equal = {}, {}, {}
        for label, values in expected.items():
            reward[label], ci95[label] = mean_ci95(values)
            # paired on the same tasks: far tighter than comparing the two means' intervals
            over_equal[label] = mean_ci95(values - expected["equal-pulls"])
        return {
            "reward": {str(k): reward},
            "ci95": {str(k): ci95},
            "minus_equal_pulls": {str(k): over_equal},
            "eval_tasks": ev.num_tasks,
            "pulls": n,
            "meta_test_steps": ev.steps,
        }


def policy_logits(actors: BatchedMLP) -> torch.Tensor:
    """Each actor's arm logits [T, k] (its input is a constant 1, as in the authors' code)."""
    weights = actors.weights[0]
    return actors(torch.ones(weights.shape[0], 1, 1, device=weights.device))[:, 0]


def pairs(arms: torch.Tensor, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the TAEN reads: one-hot arms [T, N, k] and rewards [T, N, 1]."""
    return arms, rewards[..., None]


def expected_reward(actors: BatchedMLP, tasks: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (torch.softmax(policy_logits(actors), -1).cpu() * tasks).sum(1)  # on the CPU, as tasks


def bernoulli_pulls(tasks: torch.Tensor, arms: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Pull `arms` [T, N] of tasks p [T, k]: (one-hot arms [T, N, k], 0/1 rewards [T, N])."""
    p = tasks.gather(1, arms)
    rewards = (distributed.rand(*p.shape, generator=generator) < p).to(tasks.dtype)  # task-first (torchrun)
    return F.one_hot(arms, tasks.shape[1]).to(tasks.dtype), rewards


def equal_pulls_then_commit(tasks: torch.Tensor, pulls: int, generator) -> torch.Tensor:
    """Pull the arms in turn (`pulls` in all), then commit to the best mean (ties at random): the
    committed arm's p [T]."""
    t, k = tasks.shape
    arms = (torch.arange(pulls) % k).expand(t, pulls)
    one_hot, rewards = bernoulli_pulls(tasks, arms, generator)
    counts = one_hot.sum(1)
    means = (one_hot * rewards[..., None]).sum(1) / counts.clamp_min(1)
    means = torch.where(counts > 0, means, 0.5)  # an arm never pulled: the prior mean of a coin
    noise = torch.rand(t, k, generator=generator) * 1e-6  # breaks ties at random
    return tasks.gather(1, (means + noise).argmax(1, keepdim=True))[:, 0]


def thompson_then_commit(tasks: torch.Tensor, pulls: int, particles: int, generator) -> torch.Tensor:
    """Thompson sampling with the exact prior, Dirichlet(1), represented by `particles` prior
    draws per task weighted by the likelihood of the rewards seen; after `pulls` pulls, commit
    to the arm with the highest posterior mean (the Bayes choice): its p [T]."""
    t, k = tasks.shape
    draws = DirichletBandit(k).sample_tasks(t * particles, generator).view(t, particles, k)
    log_weights = torch.zeros(t, particles)
    best = draws.argmax(-1)  # [T, M]
    for _ in range(pulls):
        chosen = torch.multinomial(torch.softmax(log_weights, -1), 1, generator=generator)  # a posterior draw
        arm = best.gather(1, chosen)  # [T, 1]: the best arm under that draw
        reward = (torch.rand(t, 1, generator=generator) < tasks.gather(1, arm)).float()
        p = draws.gather(2, arm[:, :, None].expand(-1, particles, 1))[..., 0]  # [T, M]
        log_weights += reward * p.clamp_min(1e-12).log() + (1 - reward) * (1 - p).clamp_min(1e-12).log()
    posterior_mean = (torch.softmax(log_weights, -1)[..., None] * draws).sum(1)  # [T, k]
    return tasks.gather(1, posterior_mean.argmax(1, keepdim=True))[:, 0]
