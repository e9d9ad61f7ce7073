"""Cart-pole and pendulum with physical parameters as the task, batched.

CartPole: Gymnasium's CartPole-v1 dynamics (Euler, tau 0.02, force +-10, reward 1 a step,
ends when |x| > 2.4 or |theta| > 12 degrees) with the half pole length as the task parameter,
U[0.5, 5] as in Meta-Critic Networks (Sung et al. 2017). Horizon 200.
Pendulum: Gymnasium's Pendulum-v1 dynamics (dt 0.05, torque in [-2, 2], speed in [-8, 8],
reward -(theta^2 + 0.1 thetadot^2 + 0.001 u^2)) with mass and length U[0.5, 1.5] as the task.
Horizon 200.
"""
from __future__ import annotations

import math

import torch

from ... import distributed
from .base import TaskEnv, check_horizon


class CartPole(TaskEnv):
    observation_size, action_size, discrete, horizon = 4, 2, True, 200
    gravity, cart_mass, pole_mass, force, tau = 9.8, 1.0, 0.1, 10.0, 0.02
    x_limit, theta_limit = 2.4, 12 * 2 * math.pi / 360

    def __init__(self, length_range: tuple[float, float] = (0.5, 5.0), horizon: int = 200):
        super().__init__()
        self.length_range, self.horizon = length_range, check_horizon(horizon)

    def sample_tasks(self, num_tasks, generator=None):
        low, high = self.length_range
        return low + (high - low) * torch.rand(num_tasks, 1, generator=generator)  # half pole length

    def _reset(self, episodes, generator):
        self.state = (distributed.rand(self.num_tasks, episodes, 4, generator=generator) - 0.5) * 0.1
        return self.state.clone()

    def _step(self, actions, generator):
        x, x_dot, theta, theta_dot = self.state.unbind(-1)
        length = self.tasks[:, :1]  # [T, 1] broadcasts over episodes
        total = self.cart_mass + self.pole_mass
        force = torch.where(actions == 1, self.force, -self.force)
        cos, sin = theta.cos(), theta.sin()
        temp = (force + self.pole_mass * length * theta_dot**2 * sin) / total
        theta_acc = (self.gravity * sin - cos * temp) / (length * (4 / 3 - self.pole_mass * cos**2 / total))
        x_acc = temp - self.pole_mass * length * theta_acc * cos / total
        following = torch.stack([x + self.tau * x_dot, x_dot + self.tau * x_acc,
                                 theta + self.tau * theta_dot, theta_dot + self.tau * theta_acc], -1)
        self.state = torch.where(self.done[..., None], self.state, following)
        x, theta = self.state[..., 0], self.state[..., 2]
        fallen = (x.abs() > self.x_limit) | (theta.abs() > self.theta_limit)
        return self.state.clone(), torch.ones_like(x), fallen


class Pendulum(TaskEnv):
    observation_size, action_size, discrete, horizon, action_bound = 3, 1, False, 200, 2.0
    gravity, dt, max_speed, max_torque = 10.0, 0.05, 8.0, 2.0

    def __init__(self, mass_range=(0.5, 1.5), length_range=(0.5, 1.5), horizon: int = 200):
        super().__init__()
        self.mass_range, self.length_range, self.horizon = mass_range, length_range, check_horizon(horizon)

    def sample_tasks(self, num_tasks, generator=None):
        u = torch.rand(num_tasks, 2, generator=generator)
        (m0, m1), (l0, l1) = self.mass_range, self.length_range
        return torch.stack([m0 + (m1 - m0) * u[:, 0], l0 + (l1 - l0) * u[:, 1]], -1)  # [T, (m, l)]

    @staticmethod
    def _observation(state):
        theta, theta_dot = state.unbind(-1)
        return torch.stack([theta.cos(), theta.sin(), theta_dot], -1)

    def _observe(self):
        return self._observation(self.state)

    @staticmethod
    def _initial_states(shape, generator):  # angle U[-pi, pi], speed U[-1, 1]
        return (distributed.rand(*shape, 2, generator=generator) * 2 - 1) * torch.tensor([math.pi, 1.0])

    def _reset(self, episodes, generator):
        self.state = self._initial_states((self.num_tasks, episodes), generator)
        return self._observe()

    def initial_observations(self, count, generator=None):
        return self._observation(self._initial_states((count,), generator))

    def known_reward(self, task, observations, actions, next_observations):
        """Exact: the cost is of the state before the step, whose angle the observation holds."""
        angle = torch.atan2(observations[..., 1], observations[..., 0])
        u = actions[..., 0].clamp(-self.max_torque, self.max_torque)
        return -(angle**2 + 0.1 * observations[..., 2] ** 2 + 0.001 * u**2)

    def _step(self, actions, generator):
        theta, theta_dot = self.state.unbind(-1)
        mass, length = self.tasks[:, 0:1], self.tasks[:, 1:2]
        u = actions[..., 0].clamp(-self.max_torque, self.max_torque)
        angle = (theta + math.pi) % (2 * math.pi) - math.pi
        reward = -(angle**2 + 0.1 * theta_dot**2 + 0.001 * u**2)
        new_dot = (
            theta_dot + (3 * self.gravity / (2 * length) * theta.sin() + 3 / (mass * length**2) * u) * self.dt
        )
        new_dot = new_dot.clamp(-self.max_speed, self.max_speed)
        following = torch.stack([theta + new_dot * self.dt, new_dot], -1)
        self.state = torch.where(self.done[..., None], self.state, following)
        return self._observe(), reward, torch.zeros_like(self.done)
