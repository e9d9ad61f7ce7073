"""Learned optimisers: the preprocessing formula, coordinatewise updates, per-entry hidden
states through state_dict, SGD as a hand-set network, truncated BPTT, a short meta-training
run that learns, the MNIST loader on generated files, and clear errors."""
import gzip
import json
import math

import numpy as np
import pytest
import torch

import metakit
from metakit import MetakitError
from metakit.data import sha256_of
from metakit.data.mnist import FILES, load_digits, load_mnist
from metakit.experiment import load_config, train
from metakit.experiment.l2o import meta_unroll, run_optimizer
from metakit.experiment.runner import build
from metakit.optim import CoordinatewiseLSTM, LearnedOptimizer, log_sign
from metakit.tasks.optimisation import MLPProblems, QuadraticProblems

TINY = ["task.num_problems=16", "task.steps=20", "train.unroll=10", "eval.num_problems=8",
        "eval.tune_problems=4", "eval.learning_rates=[0.01,0.1]"]


def test_log_sign_matches_the_formula_on_both_branches_and_at_the_threshold():
    p = 10.0
    threshold = torch.tensor(math.exp(-p))
    g = torch.tensor([3.0, -0.02, 1e-6, -1e-7, 0.0, float(threshold), -float(threshold)])
    out = log_sign(g, p)
    for value, (magnitude, direction) in zip(g.tolist(), out.tolist()):
        if abs(value) >= float(threshold):
            assert magnitude == pytest.approx(math.log(abs(value)) / p, rel=1e-6)
            assert direction == math.copysign(1.0, value)
        else:
            assert magnitude == -1.0
            assert direction == pytest.approx(math.exp(p) * value, rel=1e-6)
    # at the threshold both branches agree: (-1, +-1)
    torch.testing.assert_close(out[-2:], torch.tensor([[-1.0, 1.0], [-1.0, -1.0]]))
    just_below = torch.nextafter(threshold, torch.tensor(0.0))
    below = log_sign(just_below.view(1), p)
    torch.testing.assert_close(below, torch.tensor([[-1.0, 1.0]]), atol=1e-5, rtol=0)


def test_the_optimiser_is_coordinatewise_permuting_entries_permutes_updates():
    net = CoordinatewiseLSTM()
    g = torch.randn(50)
    state = [torch.randn(50, 20) for _ in range(4)]
    update, new_state = net(g, state)
    order = torch.randperm(50)
    permuted, permuted_state = net(g[order], [s[order] for s in state])
    torch.testing.assert_close(permuted, update[order])
    for a, b in zip(permuted_state, new_state):
        torch.testing.assert_close(a, b[order])


def _model():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))


def _losses(model, optimizer, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(8, 4, generator=g), torch.randn(8, 2, generator=g)
        optimizer.zero_grad()
        loss = (model(x) - y).square().mean()
        loss.backward()
        optimizer.step()
    return loss.item()


def test_hidden_states_are_per_entry_and_survive_a_state_dict_round_trip():
    torch.manual_seed(0)
    net = CoordinatewiseLSTM()
    whole = _model()
    optimizer = LearnedOptimizer(whole.parameters(), net)
    _losses(whole, optimizer, 3)
    for p in whole.parameters():
        assert optimizer.state[p]["hidden"].shape == (4, p.numel(), 20)
    saved = json_round_trip(optimizer.state_dict())  # state_dict() is a live view, as torch's own
    weights = {k: v.clone() for k, v in whole.state_dict().items()}
    _losses(whole, optimizer, 3, seed=1)

    resumed = _model()
    resumed.load_state_dict(weights)
    again = LearnedOptimizer(resumed.parameters(), net)
    again.load_state_dict(saved)
    _losses(resumed, again, 3, seed=1)
    for a, b in zip(whole.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # without the saved states the continuation differs: the states matter
    fresh = _model()
    fresh.load_state_dict(weights)
    _losses(fresh, LearnedOptimizer(fresh.parameters(), net), 3, seed=1)
    assert any(not torch.equal(a, b) for a, b in zip(whole.parameters(), fresh.parameters()))


def json_round_trip(state_dict):
    """Through torch.save / torch.load(weights_only=True), as a checkpoint would go."""
    import io

    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


class HandSetSGD(CoordinatewiseLSTM):
    """A network set by hand to output -lr * g (its state passes through untouched)."""

    def __init__(self, lr):
        super().__init__(preprocessing="none")
        self.lr = lr

    def forward(self, grad, state):
        return -self.lr * grad, state


def test_a_hand_set_network_that_outputs_minus_lr_g_equals_sgd_exactly():
    # lr a power of two: -lr * g is exact, so both sides round p - lr * g once (SGD fuses it)
    learned, reference = _model(), _model()
    loss_learned = _losses(learned, LearnedOptimizer(learned.parameters(), HandSetSGD(0.0625)), 5)
    loss_sgd = _losses(reference, torch.optim.SGD(reference.parameters(), lr=0.0625), 5)
    assert loss_learned == loss_sgd
    for a, b in zip(learned.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_truncated_bptt_does_not_backpropagate_across_unroll_boundaries():
    torch.manual_seed(0)
    net = CoordinatewiseLSTM()
    problems = QuadraticProblems(4, 5, torch.Generator().manual_seed(0))
    theta = problems.init(torch.Generator().manual_seed(1)).requires_grad_()
    state = [s.clone().requires_grad_() for s in net.initial_state(theta.numel())]
    g = torch.Generator().manual_seed(2)
    first, theta_1, state_1 = meta_unroll(net, problems, theta, state, 3, g)
    second, _, _ = meta_unroll(net, problems, theta_1, state_1, 3, g)
    second.backward()
    # nothing flows into the previous truncation: not to its inputs ...
    assert theta.grad is None and all(s.grad is None for s in state)
    # ... and the second truncation's gradient equals one computed from detached copies
    from_second = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    again, _, _ = meta_unroll(net, problems, theta_1.detach(), [s.detach() for s in state_1], 3,
                              torch.Generator().manual_seed(3))
    # (the same minibatches are irrelevant for quadratics: their loss is deterministic)
    again.backward()
    for a, b in zip(from_second, net.parameters()):
        torch.testing.assert_close(a, b.grad)
    assert any(a.abs().sum() > 0 for a in from_second)  # and the gradient is not trivially zero


def test_a_short_meta_training_run_beats_untrained_and_sgd_at_a_fixed_learning_rate(tmp_path):
    config = load_config("l2o-quadratic", [
        *TINY, "train.iterations=40", "train.lr=0.01", "train.log_every=10", "train.checkpoint_every=40",
        "eval.cases=[quadratic-20]", "eval.baselines=[sgd,adam]"])
    untrained = build(config)
    problems = QuadraticProblems(32, 10, torch.Generator().manual_seed(7))
    theta0 = problems.init(torch.Generator().manual_seed(8))

    def final(make):
        return run_optimizer(problems, theta0, make, 20, seed=9, every_step=False).mean().item()

    before = final(lambda params: LearnedOptimizer(params, untrained.net))
    train(config, tmp_path, progress=False)
    net = metakit.load(tmp_path)  # an l2o run loads as its trained network
    assert isinstance(net, CoordinatewiseLSTM) and net.config.task.name == "quadratic"
    after = final(lambda params: LearnedOptimizer(params, net))
    sgd = final(lambda params: torch.optim.SGD(params, lr=0.01))  # the best rate here (0.03 diverges)
    assert after < 0.5 * before and after < sgd, (before, after, sgd)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["final_loss"]) == {"quadratic-20"}
    assert set(results["final_loss"]["quadratic-20"]) == {"learned", "sgd", "adam"}
    assert results["learning_rates"]["quadratic-20"]["sgd"] in (0.01, 0.1)
    assert (tmp_path / "loss_curves.png").is_file()


def test_l2o_resumes_exactly(tmp_path, whole_and_resumed_runs):
    whole, killed = whole_and_resumed_runs(
        "l2o-quadratic", [*TINY, "train.log_every=1", "train.checkpoint_every=1", "eval.cases=[quadratic-20]",
                          "eval.baselines=[sgd]", "eval.learning_rates=[0.01]"],
        4, tmp_path)
    a = torch.load(whole / "checkpoint.pt", weights_only=True)["algorithm"]["net"]
    b = torch.load(killed / "checkpoint.pt", weights_only=True)["algorithm"]["net"]
    for key in a:
        if isinstance(a[key], torch.Tensor):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_digits_come_from_scikit_learn_in_two_disjoint_splits():
    train_x, train_y = load_digits("train")
    test_x, test_y = load_digits("test")
    assert train_x.shape == (1197, 64) and test_x.shape == (600, 64)
    assert 0 <= train_x.min() < train_x.max() <= 1
    assert set(train_y.tolist()) == set(range(10)) == set(test_y.tolist())
    rows = {tuple(r) for r in train_x.tolist()}
    assert sum(tuple(r) in rows for r in test_x.tolist()) < 10  # (a few digits are drawn identically)


def test_mlp_problems_are_independent_per_problem():
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(50, 6, generator=g), torch.randint(3, (50,), generator=g)
    problems = MLPProblems(images, labels, 3, [4], "sigmoid", batch_size=5, classes=3)
    theta = problems.init(g).requires_grad_()
    problems.objective(theta)[1].backward()
    assert theta.grad[[0, 2]].abs().sum() == 0 and theta.grad[1].abs().sum() > 0
    # the objective is the full-data cross-entropy of each problem's own network
    one = MLPProblems(images, labels, 1, [4], "sigmoid", batch_size=5, classes=3)
    torch.testing.assert_close(one.objective(theta[2:3].detach()), problems.objective(theta.detach())[2:3])


def test_bad_inputs_give_clear_errors():
    net = CoordinatewiseLSTM()
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(MetakitError, match="does not require grad"):
        LearnedOptimizer(frozen.parameters(), net)
    with pytest.raises(MetakitError, match="needs a CoordinatewiseLSTM"):
        LearnedOptimizer(torch.nn.Linear(2, 2).parameters(), torch.nn.LSTM(2, 20))
    # weights trained with another preprocessing cannot be loaded silently (same shapes)
    other = CoordinatewiseLSTM(p=5.0)
    with pytest.raises(MetakitError, match="p: 5.0 there, 10.0 here"):
        net.load_state_dict(other.state_dict())
    model = torch.nn.Linear(2, 1)
    with pytest.raises(MetakitError, match="preprocessing"):
        LearnedOptimizer(model.parameters(), net).load_state_dict(
            LearnedOptimizer(model.parameters(), CoordinatewiseLSTM(preprocessing="none")).state_dict())
    # a NaN gradient is refused and never enters the hidden state
    optimizer = LearnedOptimizer(model.parameters(), net)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    before = {id(p): optimizer.state[p]["hidden"].clone() for p in model.parameters()}
    weights = [p.detach().clone() for p in model.parameters()]
    model.weight.grad[0, 0] = float("nan")
    with pytest.raises(MetakitError, match="non-finite gradient"):
        optimizer.step()
    for p, w in zip(model.parameters(), weights):
        assert torch.equal(optimizer.state[p]["hidden"], before[id(p)]) and torch.equal(p, w)
    with pytest.raises(MetakitError, match="not a case of task 'quadratic'"):
        load_config("l2o-quadratic", ["eval.cases=[mlp-relu]"])
    with pytest.raises(MetakitError, match="applies to task.name mlp"):
        load_config("l2o-quadratic", ["task.hidden_sizes=[40]"])
    with pytest.raises(MetakitError, match="train.unroll"):
        load_config("l2o-quadratic", ["train.unroll=200"])


def _idx(path, array, magic):
    header = np.array([magic, *array.shape], ">u4").tobytes()
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_mnist_loader_reads_official_names_checks_sha256_and_says_what_is_missing(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _idx(folder / "t10k-images-idx3-ubyte.gz", images, 2051)
    _idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([7, 0, 3]), 2049)
    names = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    sums = {name: sha256_of(folder / name) for name in names}
    x, y = load_mnist("test", tmp_path, checksums=sums, progress=False)
    assert x.shape == (3, 784) and y.tolist() == [7, 0, 3]
    torch.testing.assert_close(x[1], torch.from_numpy(images[1].reshape(-1) / 255).float())
    with pytest.raises(MetakitError, match="SHA-256"):  # the official sums: these files are not MNIST
        load_mnist("test", tmp_path, progress=False)
    assert set(FILES) == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                          "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    with pytest.raises(MetakitError, match="train-images-idx3-ubyte.gz not found"):
        load_mnist("train", tmp_path, download_missing=False)
    _idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([7, 0, 3]), 2051)  # an image header on labels
    with pytest.raises(MetakitError, match="magic"):
        load_mnist("test", tmp_path, checksums={}, progress=False)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(MetakitError, match="not a readable gzip"):
        load_mnist("test", tmp_path, checksums={}, progress=False)
