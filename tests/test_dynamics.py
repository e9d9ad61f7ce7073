"""The dynamics ensemble (MB-MPO's learned model): batched models equal separate ones, it learns
a known system, early stopping keeps each model's best epoch, warm start, clear errors."""

import pytest
import torch

from metakit import MetakitError
from metakit.rl.dynamics import DynamicsEnsemble


def linear_system(n, generator):
    a = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.95]])
    b = torch.tensor([[0.5, 0.0], [0.0, 0.3], [0.2, 0.2]])
    s, u = torch.randn(n, 3, generator=generator), torch.randn(n, 2, generator=generator)
    return s, u, s @ a.T + u @ b.T


def test_the_batched_models_equal_separate_models():
    ensemble = DynamicsEnsemble(3, 2, models=4, hidden_sizes=(8,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ensemble.input_mean.uniform_(-1, 1), ensemble.input_std.uniform_(0.5, 2)
        ensemble.target_mean.uniform_(-1, 1), ensemble.target_std.uniform_(0.5, 2)
    s, u = torch.randn(4, 6, 3), torch.randn(4, 6, 2)
    predicted = ensemble.predict(s, u)
    for k in range(4):
        x = (torch.cat([s[k], u[k]], -1) - ensemble.input_mean) / ensemble.input_std
        w0, w1 = ensemble.net.weights
        b0, b1 = ensemble.net.biases
        delta = torch.relu(x @ w0[k] + b0[k]) @ w1[k] + b1[k]
        torch.testing.assert_close(predicted[k], s[k] + delta * ensemble.target_std + ensemble.target_mean)
    shared = ensemble.predict(s[0], u[0])  # [N, ...] goes to every model
    torch.testing.assert_close(shared[2], ensemble.predict(s[0].expand(4, 6, 3), u[0].expand(4, 6, 2))[2])


def test_it_learns_a_linear_system_and_stops_early_when_there_is_nothing_to_learn():
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    ensemble = DynamicsEnsemble(3, 2, models=3, hidden_sizes=(32, 32), generator=generator)
    s, u, following = linear_system(1000, generator)
    test_s, test_u, test_following = linear_system(300, generator)
    before = (ensemble.predict(test_s, test_u) - test_following).square().mean().item()
    info = ensemble.fit(s, u, following, epochs=25, batch_size=100, generator=generator)
    after = (ensemble.predict(test_s, test_u) - test_following).square().mean((1, 2))
    assert (after < 0.02 * before).all(), (before, after)
    assert len(info["valid_loss"]) == 3 and max(info["epochs"]) <= 25
    predictions = ensemble.predict(test_s, test_u)  # own splits and initialisations: members differ
    assert (predictions[0] - predictions[1]).abs().mean() > 1e-3 * test_following.abs().mean()
    capped = ensemble.fit(s, u, following, epochs=25, batch_size=100, generator=generator, max_updates=16)
    assert max(capped["epochs"]) == 2  # 8 batches an epoch (800 training rows): 16 updates

    # noise only: nothing to learn, so every model stops early (and keeps its best epoch's weights)
    noisy = DynamicsEnsemble(3, 2, models=3, hidden_sizes=(32,), generator=generator)
    info = noisy.fit(
        s,
        u,
        torch.randn(1000, 3, generator=generator),
        epochs=60,
        batch_size=100,
        patience=3,
        generator=generator,
    )
    assert max(info["epochs"]) < 60


def test_a_second_fit_starts_where_the_first_ended():
    generator = torch.Generator().manual_seed(1)
    ensemble = DynamicsEnsemble(3, 2, models=2, hidden_sizes=(32,), generator=generator)
    s, u, following = linear_system(1000, generator)
    first = ensemble.fit(s, u, following, epochs=20, batch_size=100, generator=generator)
    again = ensemble.fit(s, u, following, epochs=1, batch_size=100, generator=generator)
    assert max(again["valid_loss"]) < 3 * max(first["valid_loss"])  # not back at an untrained model's ~1


def test_ensemble_errors_are_clear():
    ensemble = DynamicsEnsemble(3, 2, models=2, hidden_sizes=(4,))
    with pytest.raises(MetakitError, match=r"observations \[..., 3\] and actions \[..., 2\]"):
        ensemble.predict(torch.zeros(5, 4), torch.zeros(5, 2))
    with pytest.raises(MetakitError, match="at least 2 transitions"):
        ensemble.fit(torch.zeros(1, 3), torch.zeros(1, 2), torch.zeros(1, 3))
    with pytest.raises(MetakitError, match="models, observation_size and action_size >= 1"):
        DynamicsEnsemble(3, 2, models=0)


def test_a_model_env_steps_each_task_with_its_own_model():
    from metakit.rl.envs import ModelEnv

    ensemble = DynamicsEnsemble(3, 2, models=2, hidden_sizes=(8,), generator=torch.Generator().manual_seed(0))
    env = ModelEnv(
        ensemble.dynamics,
        lambda s, a, s2: -s2.square().sum(-1),
        lambda tasks, episodes, g: torch.randn(tasks, episodes, 3, generator=g),
        3,
        2,
        horizon=5,
        num_models=2,
    )
    env.set_tasks(env.sample_tasks(4))  # models 0, 1, 0, 1
    s = env.reset(3, torch.Generator().manual_seed(1))
    a = torch.randn(4, 3, 2)
    following, reward, _ = env.step(a)
    for t, k in enumerate([0, 1, 0, 1]):
        torch.testing.assert_close(following[t], ensemble.predict(s[t], a[t])[k])
    torch.testing.assert_close(reward, -following.square().sum(-1))
