"""Runs only where CUDA is available (the GPU check in benchmarks/gpu_check.sh)."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

import metakit
from metakit import MAML
from metakit.experiment import load_config, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("model_name", ["mlp", "conv4"])
def test_meta_gradient_on_cuda_equals_cpu(model_name):
    torch.manual_seed(0)
    if model_name == "mlp":
        model, loss = metakit.nets.MLP(1, [40, 40], 1).double(), F.mse_loss
        batch = metakit.tasks.Sinusoid().sample(8, torch.Generator().manual_seed(0))
        batch = metakit.TaskBatch(*(t.double() for t in batch))
    else:
        model, loss = metakit.nets.Conv4(1, 5).double(), F.cross_entropy
        x = torch.rand(4, 5, 1, 28, 28, dtype=torch.float64)
        y = torch.arange(5).repeat(4, 1)
        batch = metakit.TaskBatch(x, y, x.flip(1), y.flip(1))
    grads = {}
    for device in ("cpu", "cuda"):
        model.to(device)
        maml = MAML(model, loss, 0.1, inner_steps=2)
        grads[device] = torch.autograd.grad(maml.meta_loss(batch.to(device)), list(model.parameters()))
    for cpu, cuda in zip(grads["cpu"], grads["cuda"]):
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("first_order", [False, True])
def test_compiled_tape_through_batch_norm_on_cuda_is_as_exact_as_eager(first_order):
    """The compiled tape through BatchNorm on CUDA (a first-order conv-4 measured 1.3e-3 off on
    CUDA once, on a ReLU batch, before the CPU's ~1e-3 was found to be a ReLU flip): float32
    eager and compiled against the same smooth net in float64 on the CPU."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16),
                                torch.nn.BatchNorm1d(16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    batch = metakit.tasks.Sinusoid(10, 10).sample(4, torch.Generator().manual_seed(0))
    exact = MAML(copy.deepcopy(model).double(), F.mse_loss, 0.1, inner_steps=2, first_order=first_order)
    reference = torch.autograd.grad(exact.meta_loss(metakit.TaskBatch(*(t.double() for t in batch))),
                                    list(exact.model.parameters()))
    reference = torch.cat([g.reshape(-1) for g in reference])
    model.cuda()
    errors = {}
    for compile in (False, True):
        maml = MAML(model, F.mse_loss, 0.1, inner_steps=2, first_order=first_order, compile=compile,
                    meta_gradient="tape")
        grads = torch.autograd.grad(maml.meta_loss(batch.to("cuda")), list(model.parameters()))
        ours = torch.cat([g.double().cpu().reshape(-1) for g in grads])
        errors[compile] = ((ours - reference).norm() / reference.norm()).item()
    assert errors[True] <= max(3 * errors[False], 1e-5), errors


def test_training_on_cuda(tmp_path):
    config = load_config("sinusoid", ["train.iterations=300", "eval.num_tasks=50", "eval.steps=[0,1]"])
    results = train(config, tmp_path, device="cuda", progress=False)
    assert results["mse_after_steps"]["1"] < results["mse_after_steps"]["0"]


def test_maml_trpo_with_its_policy_on_cuda_takes_the_cpu_episodes(tmp_path):
    """The environment steps on the CPU, the policy and TRPO run on CUDA; random numbers are
    drawn on the CPU, so the first iteration's episodes equal a CPU run's."""
    overrides = [
        "env.horizon=10",
        "train.meta_batch_size=4",
        "train.episodes=3",
        "train.iterations=2",
        "eval.num_tasks=2",
        "eval.episodes=2",
        "eval.step_sizes=[0.1]",
        "policy.hidden_sizes=[16]",
        "algorithm.cg_damping=0.1",
    ]
    runs = {
        device: train(
            load_config("maml-trpo-nav2d", overrides), tmp_path / device, device=device, progress=False
        )
        for device in ("cpu", "cuda")
    }
    first = [(tmp_path / d / "metrics.jsonl").read_text().splitlines()[0] for d in ("cpu", "cuda")]
    assert json.loads(first[0])["return_before"] == pytest.approx(
        json.loads(first[1])["return_before"], rel=1e-5
    )
    assert runs["cuda"]["returns_after_steps"].keys() == runs["cpu"]["returns_after_steps"].keys()


def test_rl2_with_its_policy_on_cuda_takes_the_cpu_trials(tmp_path):
    """The GRU policy and PPO on CUDA, the bandits on the CPU; actions are drawn on the CPU from
    the policy's probabilities, so the first iteration's trials equal a CPU run's."""
    overrides = ["train.meta_batch_size=8", "train.episodes=5", "train.iterations=2", "eval.num_tasks=4"]
    runs = {
        device: train(load_config("rl2-bandits", overrides), tmp_path / device, device=device, progress=False)
        for device in ("cpu", "cuda")
    }
    first = [json.loads((tmp_path / d / "metrics.jsonl").read_text().splitlines()[0]) for d in runs]
    assert first[0]["trial_return"] == pytest.approx(first[1]["trial_return"], rel=1e-6)
    assert runs["cuda"]["trial_return"] == pytest.approx(runs["cpu"]["trial_return"], abs=1.0)


def test_mbmpo_with_its_models_on_cuda_takes_the_cpu_random_steps(tmp_path):
    """The dynamics ensemble, the imagined episodes, the policy and TRPO on CUDA, the real
    environment on the CPU: the random first steps are the CPU run's, the models fit them
    about as well, and the checkpoint resumes on CUDA."""
    tiny = ["algorithm.meta_steps=2", "train.episodes=4", "algorithm.model_epochs=5"]
    runs = {
        device: train(load_config("mbmpo-nav2d", [*tiny, "train.iterations=2"]), tmp_path / device,
                      device=device, progress=False)
        for device in ("cpu", "cuda")
    }
    first = [json.loads((tmp_path / d / "metrics.jsonl").read_text().splitlines()[0]) for d in runs]
    assert first[0]["real_steps"] == first[1]["real_steps"] == 1000
    assert first[1]["model_valid_loss"] == pytest.approx(first[0]["model_valid_loss"], rel=1e-2)
    resumed = train(load_config("mbmpo-nav2d", [*tiny, "train.iterations=3"]), tmp_path / "cuda", resume=True,
                    device="cuda", progress=False)
    assert resumed["real_steps"] > runs["cuda"]["real_steps"] > 1000



META_CRITIC_TINY = {
    "meta-critic-cartpole": ["task.chunk=6", "task.history=3", "train.steps=3", "eval.lengths=2",
                             "eval.seeds=1", "eval.steps=4", "eval.test_every=2", "eval.test_episodes=1",
                             "eval.horizon=20"],
    "meta-critic-bandit": ["task.pulls=3", "train.steps=3", "eval.num_tasks=8", "eval.steps=3",
                           "eval.particles=16"],
    "meta-critic-sine": ["train.steps=3", "eval.num_tasks=4", "eval.shots=[4]", "eval.test_points=10",
                         "eval.steps=3", "eval.maml_iterations=2", "eval.maml_steps=1"],
}


@pytest.mark.parametrize("name", sorted(META_CRITIC_TINY))
def test_meta_critic_rl_with_its_critic_on_cuda_takes_the_cpu_episodes(name, tmp_path):
    """MVN, TAEN and the actors on CUDA, the cart-poles and bandits on the CPU (actions drawn
    there from the actors' probabilities; sines drawn there too): the first episode's critic
    loss equals a CPU run's, and meta-testing runs."""
    overrides = [*META_CRITIC_TINY[name], "train.num_tasks=4", "train.iterations=2", "train.log_every=1"]
    for device in ("cpu", "cuda"):
        train(load_config(name, overrides), tmp_path / device, device=device, progress=False)
    first = [json.loads((tmp_path / d / "metrics.jsonl").read_text().splitlines()[0])
             for d in ("cpu", "cuda")]
    assert first[1]["critic_loss"] == pytest.approx(first[0]["critic_loss"], rel=1e-3)
