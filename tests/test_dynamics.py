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


def test_bfloat16_models_run_their_matmuls_in_bfloat16_and_learn_as_well():
    """precision="bfloat16": predictions within bfloat16 rounding of the float32 ones (and not
    equal to them: the matmuls did run in bfloat16), float32 results and weights, and a fit as
    good as float32's on the linear system."""
    generator = torch.Generator().manual_seed(0)
    s, u, following = linear_system(1000, generator)
    test_s, test_u, test_following = linear_system(300, generator)
    errors = {}
    for precision in ("float32", "bfloat16"):
        ensemble = DynamicsEnsemble(3, 2, models=3, hidden_sizes=(32, 32),
                                    generator=torch.Generator().manual_seed(1), precision=precision)
        if precision == "bfloat16":
            models, s6, u6 = torch.arange(6) % 3, test_s[:60].view(6, 10, 3), test_u[:60].view(6, 10, 2)
            fast = ensemble.predict(test_s, test_u), ensemble.dynamics(models, s6, u6)  # imagined steps too
            ensemble.precision = "float32"
            exact = ensemble.predict(test_s, test_u), ensemble.dynamics(models, s6, u6)
            ensemble.precision = "bfloat16"
            for f, e in zip(fast, exact):
                assert f.dtype == torch.float32 and not torch.equal(f, e)
                torch.testing.assert_close(f, e, rtol=2e-2, atol=2e-2)
        ensemble.fit(s, u, following, epochs=25, batch_size=100, generator=torch.Generator().manual_seed(2))
        assert all(p.dtype == torch.float32 for p in ensemble.parameters())
        errors[precision] = (ensemble.predict(test_s, test_u) - test_following).square().mean().item()
    assert errors["bfloat16"] < 2 * errors["float32"] + 1e-4, errors
    with pytest.raises(MetakitError, match="precision must be one of"):
        DynamicsEnsemble(3, 2, precision="float16")


def test_a_second_fit_starts_where_the_first_ended():
    generator = torch.Generator().manual_seed(1)
    ensemble = DynamicsEnsemble(3, 2, models=2, hidden_sizes=(32,), generator=generator)
    s, u, following = linear_system(1000, generator)
    first = ensemble.fit(s, u, following, epochs=20, batch_size=100, generator=generator)
    again = ensemble.fit(s, u, following, epochs=1, batch_size=100, generator=generator)
    assert max(again["valid_loss"]) < 3 * max(first["valid_loss"])  # not back at an untrained model's ~1


def test_weight_normalised_models_start_as_plain_ones_and_learn_their_gains():
    plain = DynamicsEnsemble(3, 2, models=2, hidden_sizes=(8,), generator=torch.Generator().manual_seed(0))
    normed = DynamicsEnsemble(3, 2, models=2, hidden_sizes=(8,), generator=torch.Generator().manual_seed(0),
                              weight_norm=True)
    s, u = torch.randn(2, 5, 3), torch.randn(2, 5, 2)
    torch.testing.assert_close(normed.predict(s, u), plain.predict(s, u))
    w, g = normed.net.weights[0], normed.net.gains[0]
    assert g.shape == (2, 1, 8)
    normed.predict(s, u).sum().backward()
    assert g.grad.abs().sum() > 0  # g is learned
    # the weight's direction only: scaling v leaves the model unchanged
    before = normed.predict(s, u).detach()
    with torch.no_grad():
        w.mul_(3.0)
    torch.testing.assert_close(normed.predict(s, u), before)


def test_the_rolling_average_rule_stops_when_the_average_rises_and_keeps_the_last_weights():
    """The official rule by hand: the average starts at 1.5 x the first validation loss (the
    previous one at 2 x), then avg <- 0.5 avg + 0.5 loss; a model stops after the epoch whose
    average rose. On pure noise the validation loss soon stops falling, so each model stops
    early, and the loss reported is its last epoch's (not its best)."""
    generator = torch.Generator().manual_seed(0)
    s, u = torch.randn(400, 3, generator=generator), torch.randn(400, 2, generator=generator)
    noise = torch.randn(400, 3, generator=generator)
    ensemble = DynamicsEnsemble(3, 2, models=3, hidden_sizes=(32,), lr=0.01, generator=generator)
    losses = []  # each epoch's validation losses, recorded by a copy of the rule's inputs
    original = ensemble.net.forward

    def recording(x, index=None):
        out = original(x, index)
        if not torch.is_grad_enabled():
            losses.append(out)
        return out

    ensemble.net.forward = recording
    info = ensemble.fit(s, u, s + noise, epochs=40, batch_size=50, generator=torch.Generator().manual_seed(1),
                        rolling=0.5)
    ensemble.net.forward = original
    assert min(info["epochs"]) < 40 and len(set(info["epochs"])) > 1  # stopped, at different epochs
    y = (noise - noise.mean(0)) / noise.std(0)
    drawn = torch.Generator().manual_seed(1)  # the fit's first draws: each model's split
    order = torch.stack([torch.randperm(400, generator=drawn) for _ in range(3)])
    valid = [(out - y[order[:, :80]]).square().mean((1, 2)) for out in losses]  # [epoch][model]
    for m in range(3):
        average, previous, stopped = 1.5 * valid[0][m], 2.0 * valid[0][m], None
        for epoch, loss in enumerate(v[m] for v in valid):
            average = 0.5 * average + 0.5 * loss
            if previous < average:
                stopped = epoch
                break
            previous = average
        assert info["epochs"][m] == stopped + 1
        assert info["valid_loss"][m] == pytest.approx(valid[stopped][m].item())


def test_ensemble_errors_are_clear():
    ensemble = DynamicsEnsemble(3, 2, models=2, hidden_sizes=(4,))
    with pytest.raises(MetakitError, match=r"observations \[..., 3\] and actions \[..., 2\]"):
        ensemble.predict(torch.zeros(5, 4), torch.zeros(5, 2))
    with pytest.raises(MetakitError, match="at least 2 transitions"):
        ensemble.fit(torch.zeros(1, 3), torch.zeros(1, 2), torch.zeros(1, 3))
    with pytest.raises(MetakitError, match="models, observation_size and action_size >= 1"):
        DynamicsEnsemble(3, 2, models=0)
    with pytest.raises(MetakitError, match=r"rolling must be None or in \(0, 1\), got 1.5"):
        ensemble.fit(torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(4, 3), rolling=1.5)


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


def test_a_model_that_stopped_early_stays_as_it_stopped_while_the_others_train():
    """Early stopping freezes a model: its Adam step count is its own epochs' updates, not the
    fit's (nothing stepped its weights or moments after it stopped; BatchedAdam's own test
    checks that an inactive model's rows stay bit for bit)."""
    generator = torch.Generator().manual_seed(0)
    s, u = torch.randn(200, 3, generator=generator), torch.randn(200, 1, generator=generator)
    ensemble = DynamicsEnsemble(3, 1, models=3, hidden_sizes=(16,), lr=0.05,
                                generator=torch.Generator().manual_seed(1))
    info = ensemble.fit(s, u, s + 0.1 * torch.tanh(s * u), epochs=8, batch_size=20, patience=1,
                        generator=generator)
    assert len(set(info["epochs"])) > 1 and min(info["epochs"]) < 8, info  # stopped, at different epochs
    batches = 160 // 20
    for p in ensemble.net.parameters():
        steps = ensemble.optimizer.state[p]["step"]
        assert steps.tolist() == [e * batches for e in info["epochs"]]
