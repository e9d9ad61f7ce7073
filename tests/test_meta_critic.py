"""Meta-Critic Networks, sine setting: the critic's regression by hand, batched actors equal
separate ones, the TAEN learns (the authors' cart-pole script never stepped it), actors never
see labels, meta-test leaves the critic alone, exact resume, clear errors."""
import pytest
import torch
import torch.nn.functional as F

import metakit.experiment.meta_critic as experiment
from metakit import MetakitError
from metakit.experiment import load_config
from metakit.experiment.runner import build
from metakit.rl.meta_critic import BatchedMLP, MetaCritic, critic_regression_step, train_regression_actors

TINY = ["train.num_tasks=4", "train.steps=5", "train.renew_every=2", "eval.num_tasks=4", "eval.shots=[4]",
        "eval.test_points=10", "eval.steps=3", "eval.maml_iterations=2", "eval.maml_steps=1"]


def test_the_critic_regresses_the_negative_squared_error():
    torch.manual_seed(0)
    critic = MetaCritic(2, 2)
    optimizer = torch.optim.Adam(critic.parameters(), lr=2e-2)
    x = torch.linspace(-1, 1, 8).view(1, 8, 1)
    y, prediction = torch.sin(3 * x), torch.zeros_like(x)
    inputs, history = torch.cat([x, prediction], -1), torch.cat([x, y], -1)
    targets = -(y - prediction).square().squeeze(-1)
    expected = F.mse_loss(critic.value(inputs, critic.encoder(history)), targets).item()  # by hand
    first = critic_regression_step(critic, optimizer, inputs, critic.encoder(history), targets)
    assert first == pytest.approx(expected)
    for _ in range(100):
        loss = critic_regression_step(critic, optimizer, inputs, critic.encoder(history), targets)
    assert loss < 0.01 * expected and loss < 1e-3


def test_batched_actors_equal_a_loop_of_separate_actors():
    batched = BatchedMLP(3, [1, 5, 1], torch.Generator().manual_seed(0))
    separate = []
    for t in range(3):
        layers = [torch.nn.Linear(1, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1)]
        with torch.no_grad():
            for layer, w, b in zip(layers[::2], batched.weights, batched.biases):
                layer.weight.copy_(w[t].T)
                layer.bias.copy_(b[t, 0])
        separate.append(torch.nn.Sequential(*layers))
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.05) for m in separate]
    joint = torch.optim.Adam(batched.parameters(), lr=0.05)
    x = torch.randn(3, 7, 1)
    y = torch.sin(x) * torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1)
    for _ in range(5):
        joint.zero_grad()
        (batched(x) - y).square().mean((1, 2)).sum().backward()
        joint.step()
        for t, (model, optimizer) in enumerate(zip(separate, optimizers)):
            optimizer.zero_grad()
            (model(x[t]) - y[t]).square().mean().backward()
            optimizer.step()
    for t, model in enumerate(separate):
        torch.testing.assert_close(batched(x)[t], model(x[t]), rtol=1e-5, atol=1e-6)


def test_training_moves_the_task_encoder_and_actors_never_see_labels(monkeypatch):
    algo = build(load_config("meta-critic-sine", TINY))
    before = [p.detach().clone() for p in algo.critic.encoder.parameters()]
    sampled, seen = [], []
    original_sample, original_step = algo.sample, experiment.regression_actor_step

    def sample(*args):
        x, y = original_sample(*args)
        sampled.append(y)
        return x, y

    def actor_step(critic, actors, optimizer, x, z):
        seen.append(x)
        return original_step(critic, actors, optimizer, x, z)

    monkeypatch.setattr(algo, "sample", sample)
    monkeypatch.setattr(experiment, "regression_actor_step", actor_step)
    algo.step(torch.Generator().manual_seed(0))
    assert any(not torch.equal(a, b) for a, b in zip(before, algo.critic.encoder.parameters()))
    assert len(seen) == 5 and all(x.shape == (4, 10, 1) for x in seen)  # inputs only: no label column
    assert not any(torch.equal(x, y) for x in seen for y in sampled)


def test_meta_test_keeps_the_critic_and_encoder_frozen():
    torch.manual_seed(0)
    critic = MetaCritic(2, 2)
    state = {k: v.clone() for k, v in critic.state_dict().items()}
    z = critic.encoder(torch.randn(3, 4, 2)).detach()
    actors = train_regression_actors(critic, z, lambda g: torch.rand(3, 5, 1, generator=g), steps=5,
                                     generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(state[k], v) for k, v in critic.state_dict().items())
    assert all(p.grad is None for p in critic.parameters())
    assert actors(torch.zeros(3, 2, 1)).shape == (3, 2, 1)


def test_meta_critic_resumes_exactly(tmp_path, whole_and_resumed_runs):
    whole, killed = whole_and_resumed_runs("meta-critic-sine", [*TINY, "train.log_every=1",
                                                                "train.checkpoint_every=1"], 3, tmp_path)
    a = torch.load(whole / "checkpoint.pt", weights_only=True)["algorithm"]
    b = torch.load(killed / "checkpoint.pt", weights_only=True)["algorithm"]
    for key in a["critic"]:
        torch.testing.assert_close(a["critic"][key], b["critic"][key], rtol=0, atol=0)
    assert a["episode"] == b["episode"] == 3


def test_bad_settings_give_clear_errors():
    with pytest.raises(MetakitError, match="task.shots"):
        load_config("meta-critic-sine", ["task.shots=0"])
    with pytest.raises(MetakitError, match="task.name"):
        load_config("meta-critic-sine", ["task.name=pendulum"])
    with pytest.raises(MetakitError, match="task history must be"):
        MetaCritic(2, 2).encoder(torch.zeros(3, 0, 2))
