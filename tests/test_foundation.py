"""The foundation every family stands on: the registry and protocol (a new family trains
through the one runner untouched), per-algorithm configs, metakit.load, safe checkpoints,
the environment interface of learned models, and the recurrent core."""
import json
from dataclasses import dataclass, field

import pytest
import torch

import metakit
from metakit import MetakitError
from metakit.experiment import load_config, train
from metakit.experiment.config import check, positive
from metakit.experiment.protocol import Algorithm
from metakit.experiment.registry import ALGORITHMS, register
from metakit.rl import envs
from metakit.rl.policies import GaussianMLPPolicy, RecurrentCore
from metakit.rl.sampling import rollout


@dataclass
class EstimateSection:
    name: str = "estimate-mean"
    lr: float = check(*positive, default=0.1)


@dataclass
class EstimateTrain:
    iterations: int = 20
    log_every: int = 5
    checkpoint_every: int = 5


@dataclass
class EstimateConfig:
    name: str = "estimate"
    seed: int = 0
    algorithm: EstimateSection = field(default_factory=EstimateSection)
    train: EstimateTrain = field(default_factory=EstimateTrain)


class EstimateMean(Algorithm):
    """A family in a dozen lines: SGD on the squared distance to noisy draws around 3."""

    Config = EstimateConfig
    curve = {"loss": "squared error"}

    def __init__(self, config, device="cpu"):
        super().__init__(config, device)
        self.mean = torch.zeros((), requires_grad=True)
        self.optimizer = torch.optim.SGD([self.mean], lr=config.algorithm.lr, momentum=0.9)

    interrupt_at = None  # a test sets it to stop a run as a crash would

    def step(self, generator):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        self.optimizer.zero_grad()
        loss = (self.mean - (3 + torch.randn((), generator=generator))) ** 2
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def state_dict(self):
        return {"mean": self.mean.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.mean.copy_(state["mean"])
        self.optimizer.load_state_dict(state["optimizer"])

    def evaluate(self):
        return {"estimate": self.mean.item()}


@pytest.fixture
def estimate_family(monkeypatch, tmp_path):
    monkeypatch.setitem(ALGORITHMS, "estimate-mean", EstimateMean)
    path = tmp_path / "estimate.yaml"
    path.write_text("name: estimate\nalgorithm: {name: estimate-mean, lr: 0.05}\ntrain: {iterations: 20}\n")
    return path


def test_a_new_family_trains_resumes_and_loads_through_the_one_runner(estimate_family, tmp_path, monkeypatch):
    results = train(load_config(estimate_family), tmp_path / "whole", progress=False)
    assert results["algorithm"] == "estimate-mean" and abs(results["estimate"] - 3) < 1.5
    rows = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [5, 10, 15, 20] and all("loss" in r for r in rows)
    assert (tmp_path / "whole" / "learning_curve.png").is_file()
    # stopped at iteration 12 (the last checkpoint is at 10), then resumed: the same estimate
    monkeypatch.setattr(EstimateMean, "interrupt_at", 12)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(estimate_family), tmp_path / "resumed", progress=False)
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["iteration"] == 10
    monkeypatch.setattr(EstimateMean, "interrupt_at", None)
    resumed = train(load_config(estimate_family), tmp_path / "resumed", resume=True, progress=False)
    assert resumed["estimate"] == results["estimate"]
    loaded = metakit.load(tmp_path / "whole")
    assert isinstance(loaded, EstimateMean) and loaded.mean.item() == results["estimate"]
    # a finished run trains further with a larger train.iterations: the same as a longer run
    # (this family has no schedule); any other change, or fewer iterations, is refused
    longer = train(load_config(estimate_family, ["train.iterations=30"]), tmp_path / "longer", progress=False)
    extended = train(load_config(estimate_family, ["train.iterations=30"]), tmp_path / "whole", resume=True,
                     progress=False)
    assert extended["estimate"] == longer["estimate"] and extended["iterations"] == 30
    with pytest.raises(MetakitError, match="only train.iterations may grow"):
        train(load_config(estimate_family, ["algorithm.lr=0.1"]), tmp_path / "whole", resume=True)
    with pytest.raises(MetakitError, match="already at iteration 30"):
        train(load_config(estimate_family, ["train.iterations=25"]), tmp_path / "whole", resume=True)
    with pytest.raises(MetakitError, match=r"unknown config key 'algorithm.inner_lr'.*estimate-mean"):
        load_config(estimate_family, ["algorithm.inner_lr=0.1"])


def test_register_checks_its_target(monkeypatch):
    monkeypatch.setattr("metakit.experiment.registry.ALGORITHMS", dict(ALGORITHMS))
    with pytest.raises(MetakitError, match="needs an Algorithm subclass or a 'module:Class' path"):
        register("bad", dict)
    register("later", "some.module:Family")


@pytest.mark.parametrize("config, key, value", [
    ("maml-trpo-nav2d", "algorithm.lr", "0.1"),  # RL^2's Adam rate
    ("rl2-bandits", "eval.episodes", "5"),  # MAML-TRPO's test episodes
    ("rl2-bandits", "eval.step_sizes", "[0.1]"),
    ("rl2-bandits", "algorithm.fast_lr", "0.1"),
    ("sinusoid", "policy", "{recurrent_size: 8}"),
    ("sinusoid-reptile", "train.outer_lr", "0.001"),  # Reptile makes its own outer step
    ("omniglot-protonet", "eval.steps", "[0, 1]"),  # nothing adapts in a metric learner
    ("omniglot-protonet", "algorithm.inner_lr", "0.1"),
])
def test_a_key_the_chosen_algorithm_does_not_read_is_an_error(config, key, value):
    algorithm = load_config(config).algorithm.name
    with pytest.raises(MetakitError, match=rf"unknown config key '{key}'.*algorithm '{algorithm}' reads"):
        load_config(config, [f"{key}={value}"])


def test_meta_sgd_has_no_eval_inner_lr_and_configs_name_their_algorithm(tmp_path):
    with pytest.raises(MetakitError, match=r"unknown config key 'eval.inner_lr'.*'metasgd'"):
        load_config("sinusoid", ["algorithm.name=metasgd", "eval.inner_lr=0.1"])
    assert load_config("sinusoid", ["algorithm.name=anil", "eval.inner_lr=0.1"]).eval.inner_lr == 0.1
    (tmp_path / "empty.yaml").write_text("name: x\n")
    with pytest.raises(MetakitError, match=r"names no algorithm; add `algorithm: \{name: \.\.\.\}`"):
        load_config(tmp_path / "empty.yaml")
    assert load_config("sinusoid", ["train.outer_lr=1e-3"]).train.outer_lr == 1e-3  # YAML reads 1e-3 as text


def test_load_gives_back_a_trained_sinusoid_maml_with_its_results(tmp_path):
    config = load_config("sinusoid", ["train.iterations=30", "train.log_every=10", "eval.num_tasks=20",
                                      "eval.steps=[0,1]"])
    results = train(config, tmp_path / "run", progress=False)
    algo = metakit.load(tmp_path / "run")
    assert isinstance(algo.learner, metakit.MAML) and algo.config == config
    again = algo.evaluate()
    assert again["mse_after_steps"] == results["mse_after_steps"]


def test_corrupt_and_foreign_checkpoints_are_refused_with_the_file_named(tmp_path):
    train(load_config("sinusoid", ["train.iterations=2", "train.log_every=1", "eval.num_tasks=2",
                                   "eval.steps=[0]"]), tmp_path / "run", progress=False)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    with pytest.raises(MetakitError, match=r"checkpoint .*checkpoint.pt cannot be read") as info:
        metakit.load(tmp_path / "run")
    assert info.value.__cause__ is not None
    torch.save({"algorithm": EstimateSection(), "iteration": 1}, checkpoint)  # would need code to unpickle
    with pytest.raises(MetakitError, match="cannot be read as a metakit checkpoint"):
        metakit.load(tmp_path / "run")
    torch.save({"weights": torch.zeros(2)}, checkpoint)
    with pytest.raises(MetakitError, match="is not a metakit checkpoint"):
        metakit.load(tmp_path / "run")
    (tmp_path / "run" / "config.yaml").write_text("name: [unclosed\n")
    with pytest.raises(MetakitError, match=r"config.yaml is not valid YAML"):
        metakit.load(tmp_path / "run")


def _navigation_as_a_model(goal):
    """Navigation2D's known dynamics and reward as a ModelEnv, for one goal."""
    def dynamics(tasks, state, action):
        return state + (action * 0.1).clamp(-0.1, 0.1)

    def reward(state, action, next_state):
        return -(next_state - goal).norm(dim=-1)

    def reached(state, action, next_state):
        return ((next_state - goal).abs() < 0.01).all(-1)

    return envs.ModelEnv(dynamics, reward, lambda tasks, episodes, g: torch.zeros(tasks, episodes, 2),
                         observation_size=2, action_size=2, horizon=20, termination=reached)


def test_a_model_env_rolls_out_exactly_like_the_environment_it_models():
    goal = torch.tensor([0.3, -0.2])
    real, model = envs.Navigation2D(horizon=20), _navigation_as_a_model(goal)
    real.set_tasks(goal.expand(3, 2))
    model.set_tasks(model.sample_tasks(3))
    policy = GaussianMLPPolicy(2, 2, hidden=(8,))
    a = rollout(real, policy, 4, torch.Generator().manual_seed(0))
    b = rollout(model, policy, 4, torch.Generator().manual_seed(0))
    for field_ in ("observations", "actions", "rewards", "mask"):
        torch.testing.assert_close(getattr(b, field_), getattr(a, field_))


def test_a_model_env_spreads_tasks_over_its_models_and_checks_shapes():
    def dynamics(tasks, state, action):  # model i moves by i
        return state + tasks[:, None, None].float()

    env = envs.ModelEnv(dynamics, lambda s, a, n: n.sum(-1), lambda t, e, g: torch.zeros(t, e, 1),
                        observation_size=1, action_size=1, horizon=3, num_models=2, bounds=(-10.0, 1.5))
    env.set_tasks(env.sample_tasks(5))
    assert env.tasks.tolist() == [0, 1, 0, 1, 0]
    env.reset(2)
    obs, reward, done = env.step(torch.zeros(5, 2, 1))
    obs, reward, done = env.step(torch.zeros(5, 2, 1))
    assert obs[:, 0, 0].tolist() == [0, 1.5, 0, 1.5, 0]  # clipped to the bounds
    bad = envs.ModelEnv(lambda t, s, a: s[..., :0], lambda s, a, n: n.sum(-1),
                        lambda t, e, g: torch.zeros(t, e, 1), observation_size=1, action_size=1, horizon=3)
    bad.set_tasks(bad.sample_tasks(2))
    bad.reset(1)
    with pytest.raises(MetakitError, match=r"dynamics gave shape \(2, 1, 0\), expected \(2, 1, 1\)"):
        bad.step(torch.zeros(2, 1, 1))


def test_recurrent_core_reads_discrete_and_continuous_previous_actions():
    discrete = RecurrentCore(3, 4, hidden=5)
    x = discrete.inputs(torch.zeros(2, 3), torch.tensor([-1, 2]), torch.tensor([0.0, 1.0]),
                        torch.tensor([False, True]))
    assert x.shape == (2, 9) and x[0, 3:7].sum() == 0 and x[1, 5] == 1 and x[1, -1] == 1
    continuous = RecurrentCore(3, 2, hidden=5, discrete=False)
    x = continuous.inputs(torch.zeros(2, 3), torch.tensor([[0.5, -0.5], [0.0, 0.0]]), torch.zeros(2),
                          torch.zeros(2, dtype=torch.bool))
    features, state = continuous(x[:, None])
    assert x[0, 3:5].tolist() == [0.5, -0.5] and features.shape == (2, 1, 5) and state.shape == (1, 2, 5)
