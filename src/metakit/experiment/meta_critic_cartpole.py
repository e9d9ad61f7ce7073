"""Meta-Critic Networks (metakit.rl.meta_critic) on cart-pole with the half pole length
U[0.5, 5] as the task (the authors' RL setting).

One runner iteration is one of the authors' training episodes: fresh actors (4-40-40-2) for
the current batch of tasks (renewed every train.renew_every episodes), then train.steps
advantage actor-critic steps. Each step the TAEN reads the task's last `history` transitions
(s, one-hot a, r) into z, every actor plays a chunk of up to `chunk` steps (+1 a step, -10 on
failure; an episode runs on across chunks and restarts when it fails), ascends
log pi(a|s) (R - V(s, z)) with the 30-step return R bootstrapped from V, and MVN + TAEN regress
V(s, z) onto R. `algorithm.task_encoder: false` trains the same critic with z = 0 (the no-z
baseline).

Evaluation (the paper's Algorithm 2): fresh actors on unseen pole lengths learn from the frozen
critic, beside actor-critic from scratch (the same actors, a per-task critic V(s) trained
alongside). Every eval.test_every steps each actor plays eval.test_episodes greedy 200-step
episodes; the score is the number of training games (episodes begun) when that mean first
reaches 195.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from .. import distributed
from ..rl.envs.classic import CartPole
from ..rl.meta_critic import (
    BatchedMLP,
    ContinuingEpisodes,
    MetaCritic,
    clip_grad_norm_per_task,
    greedy_returns,
    n_step_returns,
    policy_gradient_loss,
)
from .config import check, non_negative, positive
from .evaluate import progress_bar
from .meta_critic import CriticTraining, MetaCriticSection, pair

ENDLESS = 2**62  # training episodes have no time limit (they end when the pole falls)


@dataclass
class CartPoleTaskConfig:
    name: str = check(lambda v: v == "cartpole", "'cartpole'", default="cartpole")
    length: list[float] = check(*pair, default_factory=lambda: [0.5, 5.0])  # half pole length
    history: int = check(*positive, default=9)  # transitions the TAEN reads
    chunk: int = check(*positive, default=30)  # steps per actor update (n-step returns)
    gamma: float = check(lambda v: 0 < v <= 1, "in (0, 1]", default=0.99)
    failure_reward: float = -10.0


@dataclass
class CartPoleCriticSection(MetaCriticSection):
    task_encoder: bool = True  # False: z = 0, the critic meta-trained without a task embedding
    max_grad_norm: float = check(*positive, default=0.5)  # the authors clip actor and critic gradients


@dataclass
class CartPoleTrainConfig:
    iterations: int = check(*positive, default=300)  # episodes
    num_tasks: int = check(*positive, default=10)
    steps: int = check(*positive, default=500)  # actor-critic steps per episode
    renew_every: int = check(*positive, default=10)
    log_every: int = check(*positive, default=5)
    checkpoint_every: int = check(*positive, default=10)


@dataclass
class CartPoleEvalConfig:
    lengths: int = check(*positive, default=10)  # unseen pole lengths
    seeds: int = check(*positive, default=5)  # actors per length
    steps: int = check(*non_negative, default=1000)  # actor-critic steps at meta-test
    test_every: int = check(*positive, default=10)
    test_episodes: int = check(*positive, default=10)
    horizon: int = check(*positive, default=200)
    threshold: float = 195.0
    seed: int = 1234


@dataclass
class CartPoleMetaCriticConfig:
    name: str = "meta-critic-cartpole"
    seed: int = 0
    task: CartPoleTaskConfig = field(default_factory=CartPoleTaskConfig)
    algorithm: CartPoleCriticSection = field(default_factory=CartPoleCriticSection)
    train: CartPoleTrainConfig = field(default_factory=CartPoleTrainConfig)
    eval: CartPoleEvalConfig = field(default_factory=CartPoleEvalConfig)


class CartPoleMetaCritic(CriticTraining):
    Config = CartPoleMetaCriticConfig
    named_sections = {"task": ["cartpole"]}
    curve = {"games": "games per task (fewer: longer balancing)", "critic_loss": "critic's squared error"}
    curve_ylabel = "episodes"

    def __init__(self, config: CartPoleMetaCriticConfig, device: str = "cpu"):
        super().__init__(config, device)
        torch.manual_seed(config.seed)
        a, t = config.algorithm, config.task
        self.env = CartPole(tuple(t.length), horizon=ENDLESS)
        self.critic = MetaCritic(4, 4 + 2 + 1, a.hidden_size, a.encoder_size, a.z_size).to(device)
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=a.critic_lr)
        self.episode, self.tasks, self.evaluated = 0, None, None

    def embed(self, history: torch.Tensor) -> torch.Tensor:
        if not self.config.algorithm.task_encoder:
            return torch.zeros(history.shape[0], self.critic.encoder.z_size, device=self.device)
        return self.critic.encoder(history.to(self.device))

    def actor_critic_step(self, actors, actor_optimizer, episodes: ContinuingEpisodes, value, generator):
        """One chunk and one actor update against `value(states [T, n, 4]) -> [T, n]` (detached);
        returns the chunk and its bootstrapped returns, for the critic's update."""
        t = self.config.task
        chunk = episodes.chunk(actors, t.chunk, generator).to(self.device)  # sampled on the CPU
        with torch.no_grad():
            returns = n_step_returns(chunk, value(chunk.last[:, None])[:, 0], t.gamma)
            advantages = returns - value(chunk.states)
        actor_optimizer.zero_grad(set_to_none=True)
        policy_gradient_loss(actors, chunk, advantages).backward()
        clip_grad_norm_per_task(actors, self.config.algorithm.max_grad_norm)
        actor_optimizer.step()
        return chunk, returns

    def fresh_actors(self, num_tasks: int, generator):
        actors = BatchedMLP(num_tasks, [4, 40, 40, 2], generator).to(self.device)
        return actors, torch.optim.Adam(actors.parameters(), lr=self.config.algorithm.actor_lr, fused=True)

    def step(self, generator):
        train, t = self.config.train, self.config.task
        if self.episode % train.renew_every == 0 or self.tasks is None:
            self.tasks = self.env.sample_tasks(train.num_tasks, generator)
        # under torchrun each rank trains the actors of its share of the tasks (every draw made
        # task-first); the critic's loss is the whole batch's mean over the steps taken, its
        # gradients summed over the ranks: one process's episode
        with distributed.task_share(train.num_tasks):
            tasks = distributed.shard(self.tasks)
            actors, actor_optimizer = self.fresh_actors(tasks.shape[0], generator)
            episodes = ContinuingEpisodes(self.env, tasks, t.history, t.failure_reward, generator)
            episodes.chunk(actors, t.chunk, generator)  # a first chunk for the TAEN to read
            losses = []
            for _ in range(train.steps):
                z = self.embed(episodes.history)
                read_only = partial(self.critic.value, z=z.detach())  # the actor's step leaves the TAEN
                chunk, returns = self.actor_critic_step(actors, actor_optimizer, episodes, read_only,
                                                        generator)
                error = (self.critic.value(chunk.states, z) - returns).square()
                loss = (error * chunk.mask).sum() / distributed.total(chunk.mask.sum())
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.average_gradients(self.critic.parameters(), how="sum")
                torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.config.algorithm.max_grad_norm)
                self.optimizer.step()
                losses.append(distributed.total(loss.detach()).item())
        self.episode += 1
        return {"critic_loss": sum(losses) / len(losses), "games": distributed.average(episodes.games.mean())}

    # -- meta-test -----------------------------------------------------------------------------
    def evaluation_tasks(self) -> torch.Tensor:
        """eval.lengths unseen pole lengths (from eval.seed), each eval.seeds times: [L * S, 1]."""
        ev = self.config.eval
        lengths = self.env.sample_tasks(ev.lengths, torch.Generator().manual_seed(ev.seed))
        return lengths.repeat_interleave(ev.seeds, 0)

    @torch.no_grad()
    def meta_test(self, method: str) -> dict:
        """Train fresh actors on the evaluation tasks with the frozen critic ("meta-critic") or
        with a per-task critic learned from scratch ("scratch"); the greedy test returns, the
        games played at each test, and z at each test."""
        ev, t, a = self.config.eval, self.config.task, self.config.algorithm
        tasks = self.evaluation_tasks()
        generator = torch.Generator().manual_seed(ev.seed + 1)  # the same actors and episodes per method
        actors, actor_optimizer = self.fresh_actors(tasks.shape[0], generator)
        if method == "scratch":
            own = BatchedMLP(tasks.shape[0], [4, 80, 80, 1], generator).to(self.device)
            own_optimizer = torch.optim.Adam(own.parameters(), lr=a.critic_lr)
        env, test_env = (
            CartPole(tuple(t.length), horizon=ENDLESS),
            CartPole(tuple(t.length), horizon=ev.horizon),
        )
        episodes = ContinuingEpisodes(env, tasks, t.history, t.failure_reward, generator)
        episodes.chunk(actors, t.chunk, generator)
        returns, games, codes = [], [], []
        test_generator = torch.Generator().manual_seed(ev.seed + 2)
        for step in range(ev.steps + 1):
            z = self.embed(episodes.history)
            if step % ev.test_every == 0:
                returns.append(greedy_returns(actors, test_env, tasks, ev.test_episodes, test_generator))
                games.append(episodes.games.clone())
                codes.append(z.cpu())
            if step == ev.steps:
                break
            with torch.enable_grad():
                if method == "scratch":
                    chunk, target = self.actor_critic_step(
                        actors, actor_optimizer, episodes, lambda s: own(s)[..., 0], generator
                    )
                    error = ((own(chunk.states)[..., 0] - target).square() * chunk.mask).sum(1)
                    own_optimizer.zero_grad(set_to_none=True)
                    (error / chunk.mask.sum(1).clamp_min(1)).sum().backward()
                    clip_grad_norm_per_task(own, a.max_grad_norm)
                    own_optimizer.step()
                else:
                    self.actor_critic_step(
                        actors, actor_optimizer, episodes, partial(self.critic.value, z=z), generator
                    )
        return {
            "returns": torch.stack(returns, 1),
            "games": torch.stack(games, 1),
            "z": torch.stack(codes, 1),
            "tasks": tasks,
        }

    def evaluate(self) -> dict:
        ev = self.config.eval
        bar = progress_bar(2, "meta-testing on unseen pole lengths", self.progress)
        runs = {}
        for method in ("meta-critic", "scratch"):
            runs[method] = self.meta_test(method)
            bar.update()
        bar.close()
        out = {
            "games_to_195": {},
            "reached_195": {},
            "games_to_195_censored": {},
            "curves": {},
            "eval_tasks": {
                "lengths": ev.lengths,
                "seeds": ev.seeds,
                "steps": ev.steps,
                "threshold": ev.threshold,
            },
        }
        for method, run in runs.items():
            first = games_to_threshold(run["returns"], run["games"], ev.threshold)
            reached = ~torch.isnan(first)
            out["games_to_195"][method] = first[reached].mean().item() if reached.any() else None
            out["reached_195"][method] = reached.float().mean().item()
            out["games_to_195_censored"][method] = (
                torch.where(reached, first, run["games"][:, -1]).mean().item()
            )
            out["curves"][method] = curve_by_games(run["returns"], run["games"])
            out["final_return"] = {**out.get("final_return", {}), method: run["returns"][:, -1].mean().item()}
        z, lengths = runs["meta-critic"]["z"], runs["meta-critic"]["tasks"][:, 0]
        out["z_length_correlation"] = (
            z_length_correlation(z, lengths, ev.seeds) if self.config.algorithm.task_encoder else None
        )
        last = z[:, z.shape[1] // 2 :]  # the second half of meta-test
        out["z"] = {
            "length": lengths.repeat_interleave(last.shape[1]).tolist(),
            "z": last.reshape(-1, last.shape[-1]).tolist(),
        }
        self.evaluated = out
        return out

    def plots(self, run_dir: Path) -> None:
        from .reproduce_meta_critic import plot_cartpole_curves, plot_z_by_length  # noqa: PLC0415

        if self.evaluated is not None:
            plot_cartpole_curves(self.evaluated["curves"], Path(run_dir) / "return_by_games.png")
            if self.evaluated["z_length_correlation"] is not None:
                plot_z_by_length(self.evaluated["z"], Path(run_dir) / "z_by_length.png")


def games_to_threshold(returns: torch.Tensor, games: torch.Tensor, threshold: float) -> torch.Tensor:
    """Games played [N] when each actor's greedy return [N, tests] first reaches the threshold
    (NaN where it never does)."""
    hit = returns >= threshold
    first = hit.float().argmax(1)
    at = games.gather(1, first[:, None])[:, 0]
    return torch.where(hit.any(1), at, torch.nan)


def curve_by_games(returns: torch.Tensor, games: torch.Tensor, points: int = 50) -> dict:
    """Greedy return against training games: on a grid of game counts, each actor's return at
    its last test at or before that count; mean and quartiles over actors."""
    grid = torch.linspace(1, games.max().item(), points).round().unique()
    index = (games[:, None, :] <= grid[None, :, None]).sum(-1).clamp_min(1) - 1  # [N, G]
    values = returns.gather(1, index)
    quartiles = values.quantile(torch.tensor([0.25, 0.75]), dim=0)
    return {
        "games": grid.tolist(),
        "mean": values.mean(0).tolist(),
        "q25": quartiles[0].tolist(),
        "q75": quartiles[1].tolist(),
    }


def z_length_correlation(z: torch.Tensor, lengths: torch.Tensor, seeds: int) -> dict:
    """How well z [N, tests, z] predicts the pole length: a least-squares fit of length on z
    (second half of meta-test), cross-validated over the unseen lengths (fit on half of them,
    score on the other half, and back); the Pearson correlation of the held-out predictions
    with the true lengths, and each z component's own correlation with the length."""
    z = z[:, z.shape[1] // 2 :].double()
    x = torch.cat([z, torch.ones_like(z[..., :1])], -1).reshape(-1, z.shape[-1] + 1)
    y = lengths.double().repeat_interleave(z.shape[1])
    which = (torch.arange(lengths.shape[0]) // seeds % 2).repeat_interleave(z.shape[1]).bool()
    prediction = torch.empty_like(y)
    for held in (which, ~which):
        weights = torch.linalg.lstsq(x[~held], y[~held, None]).solution
        prediction[held] = (x[held] @ weights)[:, 0]
    pearson = lambda a, b: torch.corrcoef(torch.stack([a, b]))[0, 1].item()  # noqa: E731
    return {
        "cross_validated": pearson(prediction, y),
        "components": [pearson(x[:, k], y) for k in range(z.shape[-1])],
    }
