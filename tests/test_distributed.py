"""torch.distributed: 2 gloo ranks under torchrun end with the same weights as one process
(and after a resume under torchrun), only rank 0 writes, a failing rank stops the run with its
error instead of a hang, and task batches that do not split over the ranks are refused."""
import json
import os
import runpy
import subprocess
import sys
import textwrap

import pytest
import torch

from metakit import MetakitError, distributed
from metakit.experiment import load_config
from metakit.experiment.runner import check_shardable, train

TINY = ["train.meta_batch_size=4", "train.log_every=1", "train.checkpoint_every=1", "eval.num_tasks=4",
        "eval.steps=[0, 1]"]


def torchrun(*args, timeout=120, env=None):
    # --standalone: a free port for each job, as the suite's two workers may run two at once
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)


def one_process_beside_two_ranks(script, tmp_path):
    """The script in one process and under torchrun on 2 ranks, at the same time (the suite's
    clock), each writing its result to one.pt / two.pt; returns both results."""
    one = subprocess.Popen([sys.executable, str(script), tmp_path / "one.pt"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    two = torchrun(str(script), str(tmp_path / "two.pt"))
    one_error = one.communicate(timeout=120)[1]
    assert one.returncode == 0 and two.returncode == 0, (one_error + two.stderr)[-3000:]
    return (torch.load(tmp_path / name, weights_only=True) for name in ("one.pt", "two.pt"))


def metakit_train(out, iterations, *extra):
    sets = [item for value in [*TINY, f"train.iterations={iterations}"] for item in ("--set", value)]
    return ["-m", "metakit", "train", "sinusoid", "--out", str(out), "--quiet", *sets, *extra]


def weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["algorithm"]["learner"]


@pytest.mark.heavy
def test_two_ranks_equal_one_process_and_resume_under_torchrun(tmp_path):
    """4 iterations in one process against 2 in one process, then 2 more on 2 ranks resumed
    from that checkpoint under torchrun (one launch keeps the test short)."""
    one = train(load_config("sinusoid", [*TINY, "train.iterations=4"]), tmp_path / "one", progress=False)
    two = tmp_path / "two"
    train(load_config("sinusoid", [*TINY, "train.iterations=2"]), two, progress=False)
    resumed = torchrun(*metakit_train(two, 4, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = weights(tmp_path / "one"), weights(two)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert resumed.stdout.count("query MSE after k inner steps") == 1  # rank 0 alone reports
    metrics = (two / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 4  # one row per iteration, written once
    assert one["mse_after_steps"].keys() == {"0", "1"}


RL_TINY = ["env.name=Pendulum", "env.horizon=10", "train.meta_batch_size=4", "train.episodes=3",
           "train.iterations=2", "train.checkpoint_every=1", "eval.num_tasks=2", "eval.episodes=2",
           "eval.step_sizes=[0.1]", "policy.hidden_sizes=[16]", "algorithm.cg_damping=0.1"]
META_RL_STEPS = """
import sys, torch
from metakit import distributed
from metakit.rl import MAMLTRPO, GaussianMLPPolicy, envs
from metakit.rl.dynamics import DynamicsEnsemble
from metakit.rl.mbmpo import MBMPO
distributed.init("cpu")
torch.set_default_dtype(torch.float64)
torch.manual_seed(0)
# MAML-TRPO: 2 steps
maml = MAMLTRPO(GaussianMLPPolicy(3, 1, (16,)), fast_lr=0.1, cg_damping=0.1)
generator = torch.Generator().manual_seed(0)
for _ in range(2):
    maml.step(envs.Pendulum(horizon=10), 4, 3, generator)
# MB-MPO: 3 iterations
env = envs.Pendulum(horizon=10)
policy = GaussianMLPPolicy(3, 1, (16,), activation="tanh")
ensemble = DynamicsEnsemble(3, 1, models=3, hidden_sizes=(16,), generator=torch.Generator().manual_seed(0))
meta = MAMLTRPO(policy, fast_lr=0.01, cg_damping=0.1)
algo = MBMPO(env, meta, ensemble, env.sample_tasks(1)[0], num_tasks=4, imagined_episodes=3, meta_steps=2,
             random_steps=40, model_fit={"epochs": 3, "batch_size": 20})
generator = torch.Generator().manual_seed(0)
rows = [algo.iteration(generator) for _ in range(3)]
returns = [row["imagined_return"] for row in rows]
# MB-MPO with RLlib's meta-update: Adam steps on the clipped surrogate, gradients averaged over ranks
ppo_policy = GaussianMLPPolicy(3, 1, (16,), activation="tanh")
ppo = MBMPO(env, MAMLTRPO(ppo_policy, fast_lr=0.01), DynamicsEnsemble(3, 1, models=3, hidden_sizes=(16,),
            generator=torch.Generator().manual_seed(0)), env.sample_tasks(1)[0], num_tasks=4,
            imagined_episodes=3, meta_steps=2, random_steps=40, model_fit={"epochs": 3, "batch_size": 20},
            meta_update="ppo", ppo_steps=3)
generator = torch.Generator().manual_seed(0)
for _ in range(2):
    ppo.iteration(generator)
# an ensemble fit alone, with a step size at which the models stop early at different epochs
g = torch.Generator().manual_seed(0)
obs, act = torch.randn(200, 3, generator=g), torch.randn(200, 1, generator=g)
alone = DynamicsEnsemble(3, 1, models=3, hidden_sizes=(16,), lr=0.05,
                         generator=torch.Generator().manual_seed(1))
fits = [list(alone.fit(obs, act, obs + 0.1 * torch.tanh(obs * act), epochs=8, batch_size=20, patience=1,
                       generator=g).values()) for _ in range(3)]
if distributed.is_main():
    adam = lambda o: [v for state in o.state.values() for v in state.values()]  # noqa: E731
    torch.save({"maml_trpo": maml.policy.state_dict(), "mbmpo": {
                "policy": policy.state_dict(), "ensemble": ensemble.state_dict(), "data": algo.data,
                "returns": torch.tensor(returns), "adam": adam(ensemble.optimizer), "fit": torch.tensor(fits),
                "ppo": [*ppo_policy.state_dict().values(), *adam(ppo.meta_optimizer)]},
                "alone": [*alone.state_dict().values(), *adam(alone.optimizer), torch.tensor(fits),
                          g.get_state()]},
               sys.argv[1])
distributed.shutdown()  # as the CLI does: every rank done, then no gloo thread left at exit
distributed.exit_process(0)  # and no interpreter teardown, where a rank could abort
"""


@pytest.mark.heavy
def test_maml_trpo_and_mbmpo_on_two_ranks_equal_one_process(tmp_path):
    """MAML-TRPO: each rank rolls out its 2 of the 4 tasks (Pendulum: random starts and Gaussian
    actions, drawn task-first) and the TRPO step averages gradients, Fisher-vector products and
    the line search over the ranks: the same policy as one process after 2 steps, in float64
    with damping 0.1. (With the default damping 1e-5 conjugate gradient on the nearly singular
    Fisher amplifies the rounding differences that the order of summation makes, ~1e8-fold:
    1e-7 in float32 becomes ~1e-3 of the step, 1e-16 in float64 ~1e-8.)
    MB-MPO: each rank imagines its 2 of the 4 tasks and rolls out its 2 real episodes; the real
    episodes are gathered, and each rank fits its own of the 3 models (1 and 2): the real data,
    the ensemble, its Adam state and the policy equal one process's after 3 iterations. An
    ensemble fit alone, whose models stop early at different epochs, ends bit for bit as one
    process's (weights, Adam state, record, the generator's draws). MB-MPO with the PPO-style
    meta-update (Adam on gradients averaged over the ranks) too.
    Then MAML-TRPO through `torchrun -m metakit train` and a config, in float32."""
    script = tmp_path / "meta_rl.py"
    script.write_text(META_RL_STEPS)
    a, b = one_process_beside_two_ranks(script, tmp_path)
    for key in a["maml_trpo"]:
        torch.testing.assert_close(a["maml_trpo"][key], b["maml_trpo"][key], rtol=1e-9, atol=1e-12)
    assert a["mbmpo"]["data"]["observations"].shape == (40 + 2 * 4 * 10, 3)  # random steps, an episode a task
    epochs = a["mbmpo"]["fit"][:, 1]  # [fit, model]: the epochs each model trained
    assert (epochs < 8).any() and (epochs != epochs[:, :1]).any()  # stopped early, at different epochs
    assert all(torch.equal(x, y) for x, y in zip(a["alone"], b["alone"]))  # and the same draws made
    for part in a["mbmpo"]:
        torch.testing.assert_close(a["mbmpo"][part], b["mbmpo"][part], rtol=1e-7, atol=1e-9)
    assert int(a["mbmpo"]["ppo"][-3]) == 2 * 2 * 3  # Adam's step count: iterations x meta-steps x steps

    train(load_config("maml-trpo-nav2d", RL_TINY), tmp_path / "one", progress=False)
    sets = [item for value in RL_TINY for item in ("--set", value)]
    cli = torchrun("-m", "metakit", "train", "maml-trpo-nav2d", "--out", tmp_path / "two", "--quiet", *sets)
    assert cli.returncode == 0, cli.stderr[-3000:]
    rows = [(tmp_path / run / "metrics.jsonl").read_text().splitlines() for run in ("one", "two")]
    returns = [[json.loads(row)["return_before"] for row in run] for run in rows]
    assert len(returns[1]) == 2 and returns[1] == pytest.approx(returns[0], rel=1e-4)


def test_a_failing_rank_stops_the_run_with_its_error(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent("""
        import torch
        from metakit import distributed
        distributed.init("cpu")
        if distributed.rank() == 1:
            raise RuntimeError("rank one broke")
        distributed.average_gradients([torch.nn.Parameter(torch.ones(3))])  # waits for rank 1
    """))
    result = torchrun(str(script), timeout=90, env={"METAKIT_DIST_TIMEOUT": "20"})
    assert result.returncode != 0
    assert "rank one broke" in result.stderr


def test_only_rank_zero_writes_files(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    results = train(load_config("sinusoid", [*TINY, "train.iterations=2"]), tmp_path / "run", progress=False)
    assert results["iterations"] == 2  # the other ranks evaluate too, and get the same results
    assert not (tmp_path / "run").exists()


def test_batches_that_do_not_split_over_the_ranks_are_refused(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    algo = type("Algo", (), {"shard_key": "train.meta_batch_size"})()
    for size, rule in ((2, "at least one task per rank"), (6, "the same number of tasks on every rank")):
        algo.config = load_config("sinusoid", [f"train.meta_batch_size={size}"])
        with pytest.raises(MetakitError, match=f"'train.meta_batch_size' is {size}.*4 ranks.*{rule}"):
            check_shardable(algo)
    algo.config = load_config("sinusoid", ["train.meta_batch_size=8"])
    check_shardable(algo)
    from metakit.experiment.model_free import SingleTaskExperiment

    ppo = type("Algo", (), {"shard_key": SingleTaskExperiment.shard_key,
                            "config": load_config("ppo-halfcheetah")})()
    with pytest.raises(MetakitError, match="'ppo' does not split its work over ranks"):
        check_shardable(ppo)


def test_python_m_metakit_exits_with_the_commands_status(monkeypatch, capsys):
    """torchrun judges each rank by its exit status: an error must not exit 0."""
    monkeypatch.setattr(sys, "argv", ["metakit", "train", "no-such-config"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("metakit", run_name="__main__")
    assert exit_.value.code == 2 and "neither a file nor a bundled config" in capsys.readouterr().err


def test_meta_rl_environments_that_draw_for_all_tasks_at_once_are_refused_under_torchrun(monkeypatch):
    """(As Gymnasium-stepped MuJoCo does; every bundled environment draws task-first.)"""
    from metakit.experiment.runner import build
    from metakit.rl import envs

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    build(load_config("rl2-mdp", ["env.name=TabularMDP"]))  # task-first draws: accepted
    monkeypatch.setattr(envs.TabularMDP, "shardable", False)
    with pytest.raises(MetakitError, match="TabularMDP draws its random numbers for all tasks at once"):
        build(load_config("rl2-mdp", ["env.name=TabularMDP"]))


FAMILY_STEPS = """
import sys, torch
from metakit import distributed
from metakit.experiment import load_config
from metakit.experiment.l2o import L2OExperiment
from metakit.experiment.mann import SequenceExperiment
from metakit.experiment.meta_critic import MetaCriticExperiment
from metakit.experiment.meta_critic_bandit import BanditMetaCritic
from metakit.experiment.meta_critic_cartpole import CartPoleMetaCritic
from metakit.experiment.rl2 import RL2Experiment
distributed.init("cpu")
saved = {}
experiment = SequenceExperiment(load_config("omniglot-mann", [
    "task.classes=3", "task.per_class=3", "task.shift=2", "task.rotate=10", "algorithm.controller_size=16",
    "algorithm.slots=8", "algorithm.slot_size=6", "algorithm.reads=2", "algorithm.key_strength=true",
    "algorithm.write_vector=true", "algorithm.grad_clip=0.05", "train.meta_batch_size=4"]))
generator = torch.Generator().manual_seed(0)
rows = [experiment.step(generator) for _ in range(3)]
saved["mann"] = {"model": experiment.model.state_dict(), "adam": experiment.optimizer.state_dict()["state"],
                 "metrics": torch.tensor([[row["loss"], row["accuracy"]] for row in rows])}
torch.set_default_dtype(torch.float64)
for name, sets in (("l2o-quadratic", ["task.num_problems=4", "task.steps=6"]),
                   ("l2o-mlp", ["task.num_problems=2", "task.steps=4", "task.batch_size=16"])):
    experiment = L2OExperiment(load_config(name, [*sets, "train.unroll=3"]))
    generator = torch.Generator().manual_seed(0)
    rows = [experiment.step(generator) for _ in range(2)]
    saved[name] = [*experiment.net.parameters(), torch.tensor([list(r.values()) for r in rows]),
                   torch.randn(3, generator=generator)]
experiment = MetaCriticExperiment(load_config("meta-critic-sine", ["train.num_tasks=4", "train.steps=3",
                                                                   "train.renew_every=2"]))
generator = torch.Generator().manual_seed(0)
rows = [experiment.step(generator) for _ in range(3)]
saved["meta-critic"] = [*experiment.critic.parameters(), torch.tensor([list(r.values()) for r in rows]),
                        torch.randn(3, generator=generator)]
# Meta-Critic on cart-poles (an episode fails in the 3rd, on one rank only) and bandits
for name, Experiment, sets in (
        ("meta-critic-cartpole", CartPoleMetaCritic, ["task.chunk=6", "task.history=3", "train.steps=3"]),
        ("meta-critic-bandit", BanditMetaCritic, ["task.pulls=3", "train.steps=3"])):
    experiment = Experiment(load_config(name, [*sets, "train.num_tasks=4", "train.renew_every=2"]))
    generator = torch.Generator().manual_seed(0)
    rows = [experiment.step(generator) for _ in range(3)]
    saved[name] = [*experiment.critic.parameters(), torch.tensor([list(r.values()) for r in rows]),
                   torch.randn(3, generator=generator)]
# RL^2: PPO on bandits, 6 trials in minibatches of 2 that fall unevenly on the ranks; TRPO on MDPs
for name, sets in (("rl2-bandits", ["train.meta_batch_size=6", "algorithm.minibatches=3"]),
                   ("rl2-mdp", ["train.meta_batch_size=4", "algorithm.optimizer=trpo"])):
    experiment = RL2Experiment(load_config(name, [*sets, "policy.recurrent_size=8", "train.episodes=3"]))
    generator = torch.Generator().manual_seed(0)
    rows = [experiment.step(generator) for _ in range(2)]
    saved[name] = [*experiment.policy.parameters(), torch.tensor([list(r.values()) for r in rows]),
                   torch.randn(3, generator=generator)]
if distributed.is_main():
    torch.save(saved, sys.argv[1])
distributed.shutdown()
distributed.exit_process(0)
"""


@pytest.mark.heavy
def test_mann_l2o_meta_critic_and_rl2_on_two_ranks_equal_one_process(tmp_path, real_omniglot):
    """MANN: each rank runs 2 of the 4 augmented episodes of a step; the averaged gradient is
    clipped (the clip binds here) as one process clips the whole batch's: the same model, Adam
    state and metrics after 3 steps (float32; Adam's steps are 1e-3; the conv encoder's weight
    gradients, summed per rank and then over the ranks, differ by float32 rounding: 3.8e-6 at
    most, measured, on a weight of ~0.06). The learned optimiser:
    each rank optimises its half of the problems (quadratics, and digits classifiers whose
    minibatches are drawn problem-first) and the meta-gradients are averaged: after 2 epochs
    of 2 truncations the network, the metrics and the generator equal one process's (float64).
    Meta-Critic (sine): each rank trains the actors of its 2 of the 4 tasks (weights and inputs
    drawn task-first) and the critic steps average its gradients: the same critic after 3
    episodes (a batch of tasks renewed once), float64; the same on cart-poles, whose critic
    loss is the mean over the steps all ranks took (an episode fails on one rank only), and on
    bandits. RL^2: each rank samples its share of the
    trials (bandit rewards, MDP rewards and transitions and the actions drawn task-first); PPO's
    minibatches of the whole batch fall unevenly on the ranks, each adding its rows' share of
    the mean losses; TRPO on MDPs (its value head by Adam): the same GRU after 2 iterations,
    float64, to 1e-7. (Adam's eps of 1e-8
    turns a gradient element that is 0 but for rounding, ~1e-17, into a step of ~1e-12; after
    18 steps the ranks and one process differ by ~1e-8, and by 1e-11 after one.)"""
    script = tmp_path / "families.py"
    script.write_text(FAMILY_STEPS)
    a, b = one_process_beside_two_ranks(script, tmp_path)
    torch.testing.assert_close(a.pop("mann"), b.pop("mann"), rtol=1e-5, atol=1e-5)
    for name in ("rl2-bandits", "rl2-mdp"):
        torch.testing.assert_close(a.pop(name), b.pop(name), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
