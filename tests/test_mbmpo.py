"""MB-MPO: known reward functions, imagined rollouts per model, the meta-gradient, learning,
exact resume, errors; and the model-free baselines it is compared with."""

from types import SimpleNamespace

import gymnasium
import numpy as np
import pytest
import torch
from torch.func import functional_call

from metakit import MetakitError
from metakit.experiment import load_config, train
from metakit.experiment.runner import build
from metakit.rl import MBMPO, PPO, TRPO, DynamicsEnsemble, envs
from metakit.rl.maml_trpo import MAMLTRPO
from metakit.rl.policies import GaussianMLPPolicy, mlp
from metakit.rl.sampling import rollout


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("frame_skip", [5, 1])
def test_half_cheetah_reward_from_observations_tracks_gymnasiums_reward(frame_skip):
    """Gymnasium rewards the x displacement over 5 substeps, which the observation does not hold:
    the known reward estimates it from the velocity before and after (0.4 / 0.6), and must track
    the real reward far better than the official code's velocity-after alone. With one physics
    step an env step (the official code's HalfCheetah) the displacement is dt v_after: exact."""
    env = envs.HalfCheetah(frame_skip=frame_skip)
    reference = gymnasium.make("HalfCheetah-v5", frame_skip=frame_skip)
    generator = np.random.default_rng(0)
    rows = []
    for episode in range(3):
        obs, _ = reference.reset(seed=episode)
        for _ in range(200):
            action = generator.uniform(-1, 1, 6)
            following, reward, *_ = reference.step(action)
            rows.append((obs, action, following, reward))
            obs = following
    s, a, s2 = (torch.as_tensor(np.stack([r[i] for r in rows]), dtype=torch.float32) for i in range(3))
    real = torch.tensor([r[3] for r in rows], dtype=torch.float32)
    ours = env.known_reward(torch.zeros(1), s, a, s2)
    after_only = s2[:, 8] - 0.1 * a.square().sum(-1)
    correlation = lambda x: torch.corrcoef(torch.stack([x, real]))[0, 1].item()  # noqa: E731
    if frame_skip == 1:
        torch.testing.assert_close(ours, real, rtol=1e-4, atol=1e-4)
        return
    assert correlation(ours) > 0.98 and correlation(after_only) < 0.95
    assert (ours - real).abs().mean() < 0.2 * real.std()


def test_pendulum_and_navigation_known_rewards_equal_their_environments():
    for env, task in (
        (envs.Pendulum(horizon=30), torch.tensor([0.8, 1.2])),
        (envs.Navigation2D(horizon=30), torch.tensor([0.2, -0.3])),
    ):
        env.set_tasks(task[None])
        generator = torch.Generator().manual_seed(0)
        obs = env.reset(8, generator)
        for _ in range(30):
            action = torch.randn(1, 8, env.action_size, generator=generator) * 2
            following, reward, done = env.step(action)
            live = ~env.done | done  # steps really taken
            torch.testing.assert_close(env.known_reward(task, obs, action, following)[live], reward[live])
            ended = env.known_termination(task, obs, action, following)
            assert ended is None or torch.equal(ended[live], env.terminated[live])
            obs = following


def constant_models(models: int) -> DynamicsEnsemble:
    """An ensemble whose model k moves every coordinate by k + 1 each step."""
    ensemble = DynamicsEnsemble(2, 2, models=models, hidden_sizes=(4,))
    with torch.no_grad():
        for weight in ensemble.net.weights:
            weight.zero_()
        ensemble.net.biases[-1].copy_(torch.arange(1.0, models + 1).view(models, 1, 1).expand(-1, 1, 2))
    return ensemble


def nav_mbmpo(ensemble, tasks=6, **kwargs) -> MBMPO:
    env = envs.Navigation2D(horizon=5)
    policy = GaussianMLPPolicy(2, 2, (8,), activation="tanh")
    return MBMPO(
        env,
        MAMLTRPO(policy, fast_lr=0.1),
        ensemble,
        torch.tensor([0.3, -0.2]),
        num_tasks=tasks,
        imagined_episodes=3,
        **kwargs,
    )


@pytest.mark.parametrize("tasks", [6, 5])  # spread evenly (one batch per model) or not (per-task weights)
def test_each_task_imagines_with_its_own_model(tasks):
    mbmpo = nav_mbmpo(constant_models(3), tasks)
    env = mbmpo.model_env
    env.set_tasks(env.sample_tasks(tasks))
    trajectories = rollout(env, mbmpo.policy, 3, torch.Generator().manual_seed(0))
    steps = torch.arange(5.0).view(1, 1, 5, 1)
    for t in range(tasks):
        torch.testing.assert_close(trajectories.observations[t], (t % 3 + 1) * steps[0].expand(3, 5, 2))
    # the known reward of the navigation task, from the model's states
    goal = torch.tensor([0.3, -0.2])
    torch.testing.assert_close(trajectories.rewards[1, :, 0], -(torch.full((3, 2), 2.0) - goal).norm(dim=-1))


# TRPO's surrogate; PPO's (RLlib's meta-update). The compiled objectives take the eager ones'
# steps (test_rl.py's test_compiled_maml_trpo_takes_the_eager_steps, clipped or not); compiling
# them again here cost a fresh clone's suite 30 s.
@pytest.mark.parametrize("clip", [None, 0.1])
def test_mbmpo_meta_gradient_equals_a_per_task_loop_on_the_same_imagined_episodes(float64, clip):
    torch.manual_seed(0)
    ensemble = DynamicsEnsemble(2, 2, models=3, hidden_sizes=(8,), generator=torch.Generator().manual_seed(0))
    mbmpo = nav_mbmpo(ensemble, tasks=3)
    data = mbmpo.meta.sample(mbmpo.model_env, 3, 3, torch.Generator().manual_seed(1))
    policy, params = mbmpo.policy, list(mbmpo.policy.parameters())
    if clip is not None:  # away from the sampling weights, where the clip bites
        with torch.no_grad():
            for p in params:
                p.add_(0.3 * torch.randn_like(p))
    names = [n for n, _ in policy.named_parameters()]
    vectorised = torch.autograd.grad(mbmpo.meta.objectives(data, clip=clip)()[0], params)
    train_, valid, total, clipped = data["train"], data["valid"], 0, 0
    for i in range(3):  # model i's episodes, one task at a time with plain autograd
        mask = train_.mask[i]
        inner = (
            -(
                policy.log_prob(policy(train_.observations[i]), train_.actions[i])
                * data["train_adv"][i]
                * mask
            ).sum()
            / mask.sum()
        )
        fast = {
            n: p - 0.1 * g
            for n, p, g in zip(names, params, torch.autograd.grad(inner, params, create_graph=True))
        }
        log_ratio = policy.log_prob(
            functional_call(policy, fast, (valid.observations[i],)), valid.actions[i]
        ) - policy.log_prob(data["old_out"][i], valid.actions[i])
        ratio, adv = log_ratio.exp(), data["valid_adv"][i]
        objective = ratio * adv
        if clip is not None:
            bounded = ratio.clamp(1 - clip, 1 + clip) * adv
            clipped += int((bounded < objective).sum())
            objective = torch.min(objective, bounded)
        total = total - (objective * valid.mask[i]).sum() / valid.mask[i].sum() / 3
    for got, expected in zip(vectorised, torch.autograd.grad(total, params)):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    assert clip is None or clipped > 5  # the clipped branch was exercised


def test_real_data_keeps_every_step_taken_and_the_newest_when_full():
    mbmpo = nav_mbmpo(constant_models(3), random_steps=12, buffer_size=20)
    trajectories = mbmpo.collect(torch.Generator().manual_seed(0))  # 3 random episodes of 5 steps
    assert mbmpo.real_steps == trajectories.mask.sum() == 15
    d = mbmpo.data
    torch.testing.assert_close(
        d["next_observations"].view(3, 5, 2)[:, :-1], d["observations"].view(3, 5, 2)[:, 1:]
    )
    assert d["actions"].abs().max() <= 1.0  # uniform in the action bound
    torch.testing.assert_close(
        d["next_observations"] - d["observations"], (d["actions"] * 0.1).clamp(-0.1, 0.1)
    )  # Navigation2D's own dynamics: what the models will learn
    mbmpo.collect(torch.Generator().manual_seed(1))  # 6 tasks' adapted episodes: 30 more steps, keep 20
    assert mbmpo.real_steps == 45 and mbmpo.data["observations"].shape[0] == 20


@pytest.mark.parametrize("clip", [True, False])
def test_models_see_the_actions_the_environment_applies(clip):
    """The real environment clips actions to its bound: by default the models are fitted on and
    stepped with the clipped actions, so an imagined action beyond the bound cannot reach a
    state the models extrapolate to; clip_actions=False keeps the official code's raw actions."""
    ensemble = DynamicsEnsemble(2, 2, models=3, hidden_sizes=(8,), generator=torch.Generator().manual_seed(0))
    mbmpo = nav_mbmpo(ensemble, tasks=3, random_steps=5, clip_actions=clip)
    with torch.no_grad():
        mbmpo.policy.log_std.fill_(2.0)  # std 7.4: most raw actions fall beyond the bound of 1
    mbmpo.collect(torch.Generator().manual_seed(0))  # random actions, in the bound
    mbmpo.collect(torch.Generator().manual_seed(1))  # the adapted policies' actions
    assert (mbmpo.data["actions"].abs().max() <= 1.0) == clip
    env = mbmpo.model_env
    env.set_tasks(env.sample_tasks(3))
    start = env.reset(1, torch.Generator().manual_seed(2))
    beyond = env.step(torch.full((3, 1, 2), 5.0))[0]
    env.reset(1, torch.Generator().manual_seed(2))
    at_bound = env.step(torch.full((3, 1, 2), 1.0))[0]
    assert torch.equal(beyond, at_bound) == clip and not torch.equal(beyond, start)


@pytest.mark.heavy
@pytest.mark.parametrize("meta_update", ["trpo", "ppo"])
def test_mbmpo_run_learns_navigation_and_resumes_exactly(whole_and_resumed_runs, tmp_path, meta_update):
    """mbmpo-nav2d: the real return climbs from a random policy's far into the goal's
    neighbourhood; killed at its first checkpoint and resumed, it ends with the same policy,
    models, optimisers and data."""
    overrides = ["algorithm.meta_steps=3", "train.episodes=5", f"algorithm.meta_update={meta_update}"]
    overrides += ["algorithm.meta_lr=0.03"] if meta_update == "ppo" else []  # 6 updates: larger steps
    whole, killed = whole_and_resumed_runs("mbmpo-nav2d", overrides, 2, tmp_path)
    first = torch.load(whole / "checkpoint.pt", weights_only=True)["algorithm"]
    again = torch.load(killed / "checkpoint.pt", weights_only=True)["algorithm"]
    for part in ("policy", "ensemble"):
        for key, value in first[part].items():
            torch.testing.assert_close(again[part][key], value, rtol=0, atol=0)
    for key in ("observations", "actions", "next_observations"):
        torch.testing.assert_close(again["mbmpo"]["data"][key], first["mbmpo"]["data"][key], rtol=0, atol=0)
    optimizers = ["ensemble_optimizer"] + (["meta_optimizer"] if meta_update == "ppo" else [])
    assert ("meta_optimizer" in first["mbmpo"]) == (meta_update == "ppo")
    for optimizer in optimizers:
        adam = first["mbmpo"][optimizer]["state"]
        assert adam
        for index, state in adam.items():  # each model's (or the policy's) step count and moments
            for name, value in state.items():
                torch.testing.assert_close(again["mbmpo"][optimizer]["state"][index][name], value,
                                           rtol=0, atol=0)
    curve = first["history"]
    initial = build(load_config("mbmpo-nav2d", overrides)).mbmpo.evaluate(
        10, torch.Generator().manual_seed(0)
    )
    assert initial["return"] < -40 and curve[-1]["return"] > initial["return"] / 2.5, (initial, curve)


def test_the_compile_setting_reaches_the_policy_update():
    """algorithm.compile: MB-MPO's MAML-TRPO compiles its objectives (that they take the eager
    steps is test_rl.py's test_compiled_maml_trpo_takes_the_eager_steps)."""
    for value in (False, True):
        config = load_config("mbmpo-nav2d", [f"algorithm.compile={str(value).lower()}"])
        assert build(config).mbmpo.meta.compile is value


def test_mbmpo_errors_name_the_environment_and_a_diverging_model_stops_the_run(tmp_path, monkeypatch):
    with pytest.raises(MetakitError, match=r"algorithm.meta_update.*one of \('trpo', 'ppo'\).*'adam'"):
        load_config("mbmpo-nav2d", ["algorithm.meta_update=adam"])
    with pytest.raises(MetakitError, match="meta_update must be one of .*, got 'sgd'"):
        nav_mbmpo(constant_models(3), meta_update="sgd")
    with pytest.raises(MetakitError, match="ppo_steps must be an integer >= 1, got 0"):
        nav_mbmpo(constant_models(3), meta_update="ppo", ppo_steps=0)
    with pytest.raises(MetakitError, match="ppo_clip"):
        nav_mbmpo(constant_models(3), meta_update="ppo", ppo_clip=-0.2)
    with pytest.raises(MetakitError, match="trained with meta_update='trpo'; it cannot resume"):
        trpo_state = nav_mbmpo(constant_models(3)).state_dict()
        nav_mbmpo(constant_models(3), meta_update="ppo").load_state_dict(trpo_state)
    with pytest.raises(MetakitError, match="AntDir has no known reward function"):
        build(load_config("mbmpo-nav2d", ["env.name=AntDir"]))
    with pytest.raises(MetakitError, match="needs continuous actions, got CartPole"):
        build(load_config("mbmpo-nav2d", ["env.name=CartPole", "policy.activation=relu"]))
    with pytest.raises(MetakitError, match=r"'env.frame_skip' applies to the MuJoCo environments \[.*"
                                           r"'HalfCheetah'.*\], not to Navigation2D"):
        build(load_config("mbmpo-nav2d", ["env.frame_skip=1"]))
    with pytest.raises(MetakitError, match=r"env.frame_skip.*null or >= 1"):
        load_config("mbmpo-halfcheetah", ["env.frame_skip=0"])
    with pytest.raises(MetakitError, match="frame_skip must be an integer >= 1 .* got 2.5"):
        envs.HalfCheetah(frame_skip=2.5)
    fit, calls = DynamicsEnsemble.fit, []

    def fit_then_break(self, *args, **kwargs):  # the second fit leaves a model that predicts NaN
        info = fit(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                self.net.biases[-1].fill_(float("nan"))
        return info

    monkeypatch.setattr(DynamicsEnsemble, "fit", fit_then_break)
    config = load_config("mbmpo-nav2d", ["train.iterations=3", "algorithm.meta_steps=1"])
    with pytest.raises(
        MetakitError,
        match="non-finite states at step 1 .*, at iteration 2; stopped. The last good checkpoint",
    ):
        train(config, tmp_path / "run", progress=False)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["iteration"] == 1


@pytest.mark.parametrize("make", [lambda p, v: PPO(p, v, epochs=4, minibatch_size=50), lambda p, v: TRPO(p)])
def test_model_free_baselines_improve_navigation_to_one_goal(make):
    torch.manual_seed(0)
    env, generator = envs.Navigation2D(horizon=20), torch.Generator().manual_seed(0)
    env.set_tasks(torch.tensor([[0.3, -0.3]]))
    policy = GaussianMLPPolicy(2, 2, (32, 32), activation="tanh")
    learner = make(policy, mlp(2, (32, 32), 1, "tanh"))
    returns = [learner.step(env, 20, generator)["return_train"] for _ in range(8)]
    assert returns[-1] > returns[0] + 2, returns


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_seeds_summary_reads_each_run_and_groups_seeds_by_setting(tmp_path):
    """benchmarks/mbmpo_seeds.py: each run's figures are its metrics', two seeds of one setting
    make one group with their mean, another setting its own group."""
    import importlib.util
    import json
    from pathlib import Path

    from metakit.experiment.reproduce_mbmpo import BUDGETS

    runs = {}
    k1 = ["seed=0", "algorithm.models=1", "algorithm.max_kl=0.01", "policy.init_std=1.0"]  # the paper's
    settings = {"s0": ["seed=0"], "s1": ["seed=1"], "k1": k1}
    for name, extra in settings.items():
        config = load_config("mbmpo-halfcheetah", [*BUDGETS["smoke"]["mbmpo"], *extra])
        train(config, tmp_path / name, progress=False)
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        runs[name] = [json.loads(line) for line in lines]
    path = Path(__file__).parents[1] / "benchmarks" / "mbmpo_seeds.py"
    spec = importlib.util.spec_from_file_location("mbmpo_seeds", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "seeds.json"

    def summary_of(*args) -> dict:  # the command line, in this process (it sets one thread)
        threads = torch.get_num_threads()
        try:
            script.main([*map(str, args), "--out", str(out), "--final-episodes", "3"])
        finally:
            torch.set_num_threads(threads)
        return json.loads(out.read_text())

    summary = summary_of(*(tmp_path / n for n in runs))
    for name, row in zip(runs, summary["runs"]):
        returns = [r["return"] for r in runs[name]]
        assert (row["last"], row["best"], row["iterations"]) == (returns[-1], max(returns), len(returns))
        assert row["last3"] == pytest.approx(sum(returns[-3:]) / len(returns[-3:]))
        assert 0 <= row["on_its_back"] <= row["episodes"] == 2
        again = build(load_config(str(tmp_path / name / "config.yaml"), ["eval.episodes=3"]))
        again.load_state_dict(torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["algorithm"])
        assert row["final"]["episodes"] == 3  # the run's own evaluation, over 3 episodes
        assert row["final"]["return"] == pytest.approx(again.evaluate()["return"])
    groups = {tuple(g["seeds"]): g for g in summary["by_setting"]}
    assert set(groups) == {(0, 1), (0,)} and groups[(0,)]["settings"]["models"] == 1
    bundled = load_config("mbmpo-halfcheetah")
    assert groups[(0, 1)]["settings"]["max_kl"] == bundled.algorithm.max_kl != 0.01
    assert groups[(0, 1)]["settings"]["init_std"] == bundled.policy.init_std != 1.0
    assert (groups[(0,)]["settings"]["max_kl"], groups[(0,)]["settings"]["init_std"]) == (0.01, 1.0)
    assert all(len(r["steps_on_back_by_iteration"]) == r["iterations"] for r in summary["runs"])
    # each iteration's share of steps on the back, from the kept data: 10 steps taken, the 8 kept
    # (global steps 2-9) past 2 rad at steps 3, 5 and 6
    pitch = torch.tensor([0, 2.5, 0, -3, 2.1, 0, 0, 0])
    kept = SimpleNamespace(data={"observations": torch.stack([torch.zeros(8), pitch], 1)}, real_steps=10)
    shares = script.steps_on_back_by_iteration(kept, [{"real_steps": n} for n in (4, 7, 10)])
    assert shares == pytest.approx([0.5, 2 / 3, 0.0])
    assert script.steps_on_back_by_iteration(kept, [{"real_steps": n} for n in (2, 10)])[0] is None
    last = [runs[name][-1]["return"] for name in ("s0", "s1")]
    assert groups[(0, 1)]["last"]["mean"] == pytest.approx(sum(last) / 2)
    assert groups[(0, 1)]["last"]["sem"] == pytest.approx(abs(last[0] - last[1]) / 2)  # std / sqrt(2)
    # --merge keeps the runs already recorded, whose directories need not exist any more
    (tmp_path / "s0").rename(tmp_path / "gone")
    merged = summary_of(tmp_path / "s1", "--merge")
    assert sorted(r["run"] for r in merged["runs"]) == sorted(r["run"] for r in summary["runs"])
    assert merged["by_setting"] == summary["by_setting"]
    # --label: the same settings run by other code, a group of their own
    labelled = summary_of(tmp_path / "s1", "--merge", "--label", "new code")["by_setting"]
    groups = sorted((g["seeds"], g["label"], g["settings"]["models"]) for g in labelled)
    assert groups == [([0], "", 1), ([0], "", 5), ([1], "new code", 5)]
    # a row recorded before max_kl and init_std were kept ran the paper's: --merge says so
    recorded = json.loads(out.read_text())
    for row in recorded["runs"]:
        del row["settings"]["max_kl"], row["settings"]["init_std"]
    out.write_text(json.dumps(recorded))
    older = {r["run"]: r["settings"] for r in summary_of(tmp_path / "s1", "--merge")["runs"]}
    assert (older[str(tmp_path / "s0")]["max_kl"], older[str(tmp_path / "s0")]["init_std"]) == (0.01, 1.0)
    assert older[str(tmp_path / "s1")]["max_kl"] == bundled.algorithm.max_kl


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_first_iteration_probe_runs_the_first_iteration_as_metakit_train_does(tmp_path):
    """benchmarks/mbmpo_first_iteration.py: its first iteration is the training run's (the same
    generator: the same models, returns and evaluation), then the second collection's share of
    episodes on the cheetah's back."""
    import importlib.util
    import json
    from pathlib import Path

    from metakit.experiment.reproduce_mbmpo import BUDGETS

    overrides = [*BUDGETS["smoke"]["mbmpo"], "train.iterations=1"]
    train(load_config("mbmpo-halfcheetah", overrides), tmp_path / "run", progress=False)
    trained = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    path = Path(__file__).parents[1] / "benchmarks" / "mbmpo_first_iteration.py"
    spec = importlib.util.spec_from_file_location("mbmpo_first_iteration", path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    row = probe.first_iteration("mbmpo-halfcheetah", 0, overrides)
    names = {"first_fit_valid_loss": "model_valid_loss", "imagined_return": "imagined_return",
             "return": "return", "return_adapted": "return_adapted"}  # the probe's name: the run's
    for mine, theirs in names.items():
        assert row[mine] == trained[theirs], mine
    for name in ("second_collection", "imagined_adapted", "untrained"):
        assert 0 <= row[f"{name}_steps_on_back"] <= row[f"{name}_turned_over"] <= 1, name
    assert 0 < row["random_steps_max_pitch"] < 3.2  # radians
    quick = probe.untrained_only("mbmpo-halfcheetah", 0, overrides)  # the same steps, no training
    assert quick == {k: row[k] for k in quick}
    # one task, two episodes of three steps: the first past 2 rad once, its last step unused
    obs = torch.zeros(1, 2, 3, 17)
    obs[0, 0, 1, 1], obs[0, 0, 2, 1], obs[0, 1, 0, 1] = -2.5, 2.5, 1.9
    episodes = SimpleNamespace(observations=obs, mask=torch.tensor([[[1, 1, 0], [1, 1, 1.0]]]))
    assert probe.turned_over("x", episodes) == {"x_turned_over": 0.5, "x_steps_on_back": 0.2}
    summary = probe.summarise([], [row, {**row, "second_collection_turned_over": 0.0}])
    assert (summary["seeds_with_any_turned_over"], summary["mean_turned_over"]) == (
        int(row["second_collection_turned_over"] > 0), row["second_collection_turned_over"] / 2)
