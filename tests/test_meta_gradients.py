"""Meta-gradients of MAML, first-order MAML, Meta-SGD and ANIL against independent computations."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metakit
from metakit import MAML


def small_batch(tasks=3, shots=6):
    task = metakit.tasks.Sinusoid(support_shots=shots, query_shots=shots)
    return task.sample(tasks, torch.Generator().manual_seed(1))


def flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


def loop_meta_loss(model, batch, lr, steps, first_order=False, lrs=None, adapt=None):
    """MAML written the plain way: per task, autograd.grad with create_graph."""
    params = dict(model.named_parameters())
    adapt = adapt or list(params)
    total = 0
    for sx, sy, qx, qy in zip(*batch):
        fast = dict(params)
        for _ in range(steps):
            loss = F.mse_loss(torch.func.functional_call(model, fast, (sx,)), sy)
            grads = torch.autograd.grad(loss, [fast[n] for n in adapt], create_graph=not first_order)
            for n, g in zip(adapt, grads):
                step = lr if lrs is None else lrs[n]
                fast[n] = fast[n] - step * (g.detach() if first_order else g)
        total = total + F.mse_loss(torch.func.functional_call(model, fast, (qx,)), qy)
    return total / batch.num_tasks


@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_matches_central_finite_differences(float64, steps):
    model = metakit.nets.MLP(1, [8, 8], 1)
    batch = small_batch()
    maml = MAML(model, F.mse_loss, inner_lr=0.05, inner_steps=steps)
    params = list(model.parameters())
    analytic = flat(torch.autograd.grad(maml.meta_loss(batch), params))
    numeric = torch.zeros_like(analytic)
    flat_params = torch.nn.utils.parameters_to_vector(params).detach()
    eps = 1e-6
    with torch.no_grad():
        for i in range(flat_params.numel()):
            values = []
            for sign in (1, -1):
                shifted = flat_params.clone()
                shifted[i] += sign * eps
                torch.nn.utils.vector_to_parameters(shifted, params)
                values.append(maml.meta_loss(batch))
            numeric[i] = (values[0] - values[1]) / (2 * eps)
        torch.nn.utils.vector_to_parameters(flat_params, params)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-7)
    # a first-order gradient is measurably different, so the check above has teeth
    fo = MAML(model, F.mse_loss, inner_lr=0.05, inner_steps=steps, first_order=True)
    assert (flat(torch.autograd.grad(fo.meta_loss(batch), params)) - numeric).abs().max() > 1e-3


@pytest.mark.parametrize("first_order", [False, True])
def test_vmapped_meta_gradient_equals_plain_loop(float64, first_order):
    model = metakit.nets.MLP(1, [16, 16], 1)
    batch = small_batch(tasks=5)
    maml = MAML(model, F.mse_loss, inner_lr=0.1, inner_steps=2, first_order=first_order)
    params = list(model.parameters())
    ours = flat(torch.autograd.grad(maml.meta_loss(batch), params))
    reference = flat(torch.autograd.grad(loop_meta_loss(model, batch, 0.1, 2, first_order), params))
    torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-12)


def test_meta_sgd_step_sizes_receive_their_exact_gradient(float64):
    model = metakit.nets.MLP(1, [8], 1)
    batch = small_batch()
    maml = MAML(model, F.mse_loss, inner_lr=0.05, inner_steps=2, learn_inner_lr=True)
    with torch.no_grad():  # make the step sizes differ per entry
        for p in maml.inner_lrs.values():
            p.uniform_(0.01, 0.1)
    lrs = maml.step_sizes()
    ours = torch.autograd.grad(maml.meta_loss(batch), list(lrs.values()))
    reference = torch.autograd.grad(loop_meta_loss(model, batch, None, 2, lrs=lrs), list(lrs.values()))
    for a, b in zip(ours, reference):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b)
    assert set(n for n, _ in maml.named_parameters()) >= {f"inner_lrs.{k}" for k in maml.inner_lrs}


def test_anil_adapts_only_the_head_but_meta_learns_the_body(float64):
    model = metakit.nets.MLP(1, [8, 8], 1)  # Sequential: 0, 2 body; 4 head
    batch = small_batch()
    maml = MAML(model, F.mse_loss, inner_lr=0.1, inner_steps=2, adapt_params=["4"])
    assert maml.adapt_names == ["4.weight", "4.bias"]
    fast = maml.adapt(batch.support_x, batch.support_y)
    for name, p in model.named_parameters():
        changed = (fast[name] - p).abs().amax(dim=tuple(range(1, p.dim() + 1)))
        assert (changed > 0).all() if name.startswith("4.") else (changed == 0).all(), name
    params = list(model.parameters())
    ours = flat(torch.autograd.grad(maml.meta_loss(batch), params))
    reference = flat(
        torch.autograd.grad(loop_meta_loss(model, batch, 0.1, 2, adapt=["4.weight", "4.bias"]), params)
    )
    torch.testing.assert_close(ours, reference)
    assert ours[: model[0].weight.numel()].abs().sum() > 0  # the body still gets a meta-gradient


@pytest.mark.parametrize("chunk_size", [1, 2, 4])
def test_chunked_equals_unchunked(chunk_size):
    model = metakit.nets.MLP(1, [16], 1)
    batch = small_batch(tasks=5)
    params = list(model.parameters())
    whole = flat(torch.autograd.grad(MAML(model, F.mse_loss, 0.1).meta_loss(batch), params))
    chunked = MAML(model, F.mse_loss, 0.1, chunk_size=chunk_size)
    torch.testing.assert_close(flat(torch.autograd.grad(chunked.meta_loss(batch), params)), whole)
    model.zero_grad()
    loss = chunked.meta_backward(batch)
    torch.testing.assert_close(flat([p.grad for p in params]), whole)
    torch.testing.assert_close(loss, MAML(model, F.mse_loss, 0.1).meta_loss(batch).detach())


def test_adapt_and_predict_shapes_and_values(float64):
    model = metakit.nets.MLP(1, [8], 1)
    batch = small_batch(tasks=4)
    maml = MAML(model, F.mse_loss, inner_lr=0.1)
    fast = maml.adapt(batch.support_x, batch.support_y, steps=3)
    assert all(v.shape[0] == 4 for v in fast.values())
    pred = maml.predict(fast, batch.query_x)
    assert pred.shape == batch.query_y.shape
    # task 2 by hand
    one = {n: v[2] for n, v in fast.items()}
    torch.testing.assert_close(pred[2], torch.func.functional_call(model, one, (batch.query_x[2],)))
    zero = maml.adapt(batch.support_x, batch.support_y, steps=0)
    torch.testing.assert_close(maml.predict(zero, batch.query_x), model(batch.query_x))


NORMS = {
    "batchnorm": lambda: nn.BatchNorm1d(8, track_running_stats=False),
    "batchnorm-running-stats": lambda: nn.BatchNorm1d(8),
    "layernorm": lambda: nn.LayerNorm(8),
    "groupnorm": lambda: nn.GroupNorm(2, 8),
    "instancenorm": lambda: nn.InstanceNorm1d(8, affine=True),
    "rmsnorm": lambda: nn.RMSNorm(8),
}


class NormNet(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.inp, self.norm, self.out = nn.Linear(1, 8), norm, nn.Linear(8, 1)

    def forward(self, x):
        h = self.inp(x)
        if isinstance(self.norm, nn.InstanceNorm1d):  # normalises [C, L]: channels first
            h = self.norm(h.transpose(-1, -2)).transpose(-1, -2)
        else:
            h = self.norm(h)
        return self.out(torch.tanh(h))


@pytest.mark.parametrize("chunk_size", [None, 1])  # one vmap; a loop (no vmap, native norms)
@pytest.mark.parametrize("norm", list(NORMS))
def test_second_order_through_every_normalisation_layer_matches_loop(float64, norm, chunk_size):
    """vmap'd second-order MAML through affine norms used to be ~1% off (torch 2.13 CPU)."""
    model = NormNet(NORMS[norm]())
    with torch.no_grad():  # move affine parameters off their 1/0 init so errors would show
        for p in model.norm.parameters():
            p.add_(0.5 * torch.randn_like(p))
    batch = small_batch(tasks=4, shots=10)
    params = list(model.parameters())
    maml = MAML(model, F.mse_loss, inner_lr=0.1, inner_steps=2, chunk_size=chunk_size)
    model.train()
    ours = flat(torch.autograd.grad(maml.meta_loss(batch), params))
    reference = flat(torch.autograd.grad(loop_meta_loss(model, batch, 0.1, 2), params))
    assert (ours - reference).norm() <= 1e-9 * reference.norm()


def test_batchnorm_running_stats_are_kept_as_the_task_mean():
    model = NormNet(nn.BatchNorm1d(8))
    batch = small_batch(tasks=4, shots=10)
    MAML(model, F.mse_loss, inner_lr=0.1, inner_steps=1).meta_loss(batch)
    assert model.norm.running_mean.abs().sum() > 0
    assert int(model.norm.num_batches_tracked) == 2  # one support and one query forward per task


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_chunked_meta_backward_keeps_the_running_stats_of_every_task(chunk_size):
    """meta_backward in chunks gives the gradient and the BatchNorm running statistics of one
    pass over the whole batch (it used to keep only the last chunk's statistics)."""
    batch = small_batch(tasks=4, shots=10)
    results = []
    for size in (None, chunk_size):
        torch.manual_seed(0)
        model = NormNet(nn.BatchNorm1d(8))
        maml = MAML(model, F.mse_loss, inner_lr=0.1, chunk_size=size)
        maml.meta_backward(batch)
        results.append(
            (
                model.norm.running_mean.clone(),
                model.norm.running_var.clone(),
                int(model.norm.num_batches_tracked),
                flat(p.grad for p in model.parameters()),
            )
        )
    (mean, var, count, grad), (chunked_mean, chunked_var, chunked_count, chunked_grad) = results
    torch.testing.assert_close(chunked_mean, mean)
    torch.testing.assert_close(chunked_var, var)
    assert chunked_count == count == 2
    torch.testing.assert_close(chunked_grad, grad)


def test_maml_trpo_through_a_layernorm_policy_matches_a_per_task_loop(float64):
    """MAML-TRPO maps its inner step over tasks with the engine: through LayerNorm, the vmapped
    second-order surrogate gradient equals the one of a plain loop over tasks (native norms)."""
    from metakit.rl import MAMLTRPO, envs
    from metakit.rl.policies import GaussianMLPPolicy

    env = envs.Navigation2D(horizon=6)
    policy = GaussianMLPPolicy(2, 2, hidden=(8,))
    policy.mean = nn.Sequential(nn.Linear(2, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 2))
    gradients = []
    for chunk_size in (None, 1):
        algo = MAMLTRPO(policy, fast_lr=0.5, chunk_size=chunk_size)
        data = algo.sample(env, 3, 4, torch.Generator().manual_seed(0))
        surrogate, kl, _ = algo.objectives(data)()
        gradients.append(flat(torch.autograd.grad(surrogate, list(policy.parameters()))))
    vmapped, loop = gradients
    assert loop.norm() > 0
    assert (vmapped - loop).norm() <= 1e-9 * loop.norm()


def _sgd_update_by(learner, batch, use_meta_step):
    """Parameters after one SGD step of size 1 (so the change is minus the meta-gradient)."""
    optimizer = torch.optim.SGD(learner.parameters(), lr=1.0)
    before = [p.detach().clone() for p in learner.parameters()]
    if use_meta_step:
        loss = learner.meta_step(batch, optimizer)
    else:
        optimizer.zero_grad()
        loss = learner.meta_loss(batch)
        loss.backward()
        optimizer.step()
    change = [(b - p.detach()) for b, p in zip(before, learner.parameters())]
    with torch.no_grad():
        for p, b in zip(learner.parameters(), before):
            p.copy_(b)
    return loss.detach(), flat(change)


VARIANTS = {
    "maml-3-steps": {"inner_steps": 3},
    "first-order": {"first_order": True},
    "meta-sgd": {"learn_inner_lr": True},
    "anil": {"adapt_params": ["out"]},
    "chunked": {"chunk_size": 2},
    "uneven-chunks": {"chunk_size": 3},  # 3 + 1 tasks: each chunk's mean weighted by its share
}


@pytest.mark.parametrize(
    "norm, variant",
    [(norm, "maml-3-steps") for norm in ["none", *NORMS]]
    + [("layernorm", v) for v in VARIANTS if v != "maml-3-steps"],
)
def test_meta_step_takes_the_meta_gradient_of_meta_loss(float64, norm, variant):
    """meta_step (torch.func's gradient of the whole meta-loss, or the tape where a norm layer
    keeps running statistics in training) moves the weights exactly as meta_loss().backward()."""
    torch.manual_seed(0)
    model = NormNet(NORMS[norm]() if norm != "none" else nn.Identity())
    model.inp.weight.requires_grad_(False)  # a frozen parameter stays out of both
    batch = small_batch(tasks=4, shots=5)
    maml = MAML(model, F.mse_loss, inner_lr=0.1, meta_gradient="functional", compile=False,
                **VARIANTS[variant])
    for mode in ("train", "eval"):
        getattr(model, mode)()
        loss, step = _sgd_update_by(maml, batch, True)
        reference_loss, reference = _sgd_update_by(maml, batch, False)
        torch.testing.assert_close(loss, reference_loss, rtol=1e-12, atol=0)
        assert (step - reference).norm() <= 1e-10 * reference.norm() and reference.norm() > 0


@pytest.mark.heavy
def test_compiled_meta_step_through_a_norm_layer_is_as_exact_as_eager():
    """torch.func's compiled meta-gradient through LayerNorm against a float64 loop (every
    norm layer: benchmarks/compiled_norms.py)."""
    torch.manual_seed(0)
    model = NormNet(nn.LayerNorm(8))
    batch = small_batch(tasks=4, shots=10)
    exact = NormNet(nn.LayerNorm(8))
    exact.load_state_dict(model.state_dict())
    exact.double()
    reference = flat(
        torch.autograd.grad(
            loop_meta_loss(exact, metakit.TaskBatch(*(t.double() for t in batch)), 0.1, 2),
            list(exact.parameters()),
        )
    )
    errors = {}
    for compile in (False, True):
        maml = MAML(
            model, F.mse_loss, inner_lr=0.1, inner_steps=2, compile=compile, meta_gradient="functional"
        )
        _, step = _sgd_update_by(maml, batch, True)
        errors[compile] = ((step.double() - reference).norm() / reference.norm()).item()
    assert errors[True] < max(3 * errors[False], 1e-6), errors


@pytest.mark.heavy
def test_the_compiled_tape_through_batch_norm_equals_the_eager_tape_and_its_running_statistics():
    """compile=True compiles meta_loss's tape through norm layers too (once refused: the ~1e-3
    measured on conv-4 was a ReLU flipping on float32 rounding, docs/speed.md); BatchNorm in
    training mode updating its running statistics, two meta-iterations."""
    results = {}
    for compile in (False, True):
        torch.manual_seed(0)
        model = NormNet(nn.BatchNorm1d(8))
        maml = MAML(model, F.mse_loss, inner_lr=0.1, inner_steps=2, compile=compile, meta_gradient="tape")
        assert (maml._task_losses != maml._chunk_losses) == compile  # the tape really is compiled
        batch = small_batch(tasks=4, shots=10)
        for _ in range(2):
            model.zero_grad()
            maml.meta_loss(batch).backward()
        results[compile] = (flat([p.grad for p in model.parameters()]), model.norm.running_mean.clone(),
                            model.norm.running_var.clone())
    (eager, mean, var), (compiled, compiled_mean, compiled_var) = results[False], results[True]
    assert (compiled - eager).norm() <= 1e-5 * eager.norm()
    torch.testing.assert_close(compiled_mean, mean)
    torch.testing.assert_close(compiled_var, var)
    assert not torch.equal(mean, torch.zeros_like(mean))  # the statistics did move


def test_meta_step_is_compiled_by_default_and_meta_loss_is_not(monkeypatch):
    """compile=None: meta_step's torch.func gradient is compiled (docs/speed.md measured it
    faster for every model, first order too); meta_loss stays eager."""
    import metakit.gradient.maml as maml_module

    wrapped, options = [], []

    def record(fn, **compile_options):
        wrapped.append(fn)
        options.append(compile_options)
        return fn

    monkeypatch.setattr(maml_module, "compile_own", record)
    batch = small_batch(tasks=2, shots=3)
    for model in (metakit.nets.MLP(1, [8], 1), metakit.nets.Conv4(1, 5, hidden=4, image_size=16)):
        by_default = MAML(model, F.mse_loss, 0.1)
        assert by_default.compiled and by_default.meta_gradient == "functional" and wrapped == []
        assert by_default._task_losses == by_default._chunk_losses  # meta_loss() is eager
        wrapped.clear()
    mlp = metakit.nets.MLP(1, [8], 1)
    by_default = MAML(mlp, F.mse_loss, 0.1)
    for _ in range(2):
        by_default.meta_step(batch, torch.optim.SGD(mlp.parameters(), lr=0.0))
    assert len(wrapped) == 1  # compiled once, at the first meta_step
    # on CPU without inductor's channels-last layout change (slower and larger for conv-4)
    assert options == [{"options": {"layout_optimization": False}}]
    wrapped.clear()
    eager = (MAML(mlp, F.mse_loss, 0.1, compile=False), MAML(mlp, F.mse_loss, 0.1, meta_gradient="tape"))
    assert MAML(mlp, F.mse_loss, 0.1, first_order=True).compiled
    assert MAML(metakit.nets.Conv4(1, 5, hidden=4), F.mse_loss, 0.1, first_order=True).compiled
    for chosen in eager:
        assert not chosen.compiled and chosen.meta_gradient == "tape"
    eager[0].meta_step(batch, torch.optim.SGD(mlp.parameters(), lr=0.0))
    assert wrapped == []
    with pytest.raises(metakit.MetakitError, match="compile must be None .* got 'yes'"):
        MAML(mlp, F.mse_loss, 0.1, compile="yes")


def test_each_compiled_learner_has_its_own_compiled_code_cache():
    """Dynamo caches compiled code per code object, with a limit of 8 recompilations: learners
    sharing one (a method, torch.func's wrapper) made the 9th learner in a process run eager."""
    from torch._dynamo.utils import counters

    from metakit.engine import compile_own

    def graphs_compiled(wrap):
        before = counters["stats"]["unique_graphs"]
        for width in range(1, 11):  # ten "learners", each a new input shape
            wrap(lambda x: (x * 2).sum())(torch.ones(width))
        return counters["stats"]["unique_graphs"] - before

    torch._dynamo.reset()
    assert graphs_compiled(lambda fn: compile_own(fn, backend="eager")) == 10
    # the same with one code object for all ten (the lambda below): Dynamo stops at 8
    assert graphs_compiled(lambda fn: torch.compile(lambda x: fn(x), backend="eager", dynamic=False)) < 10


def test_memory_budget_chooses_a_chunk_that_fits_and_keeps_the_meta_gradient():
    from metakit.engine import peak_memory_mb

    torch.manual_seed(0)
    model = metakit.nets.MLP(1, [64, 64], 1)
    batch = small_batch(tasks=8, shots=50)
    params = list(model.parameters())
    whole = flat(torch.autograd.grad(MAML(model, F.mse_loss, 0.1).meta_loss(batch), params))

    def peak_of_meta_backward(maml):
        model.zero_grad(set_to_none=True)
        return peak_memory_mb(lambda: maml.meta_backward(batch), "cpu")

    one_task, all_tasks = (peak_of_meta_backward(MAML(model, F.mse_loss, 0.1, chunk_size=k)) for k in (1, 8))
    assert all_tasks > 3 * one_task  # the test's premise: memory grows with the tasks in a chunk
    budget = 1.5 * one_task
    maml = MAML(model, F.mse_loss, 0.1, memory_budget_mb=budget)
    maml.meta_backward(batch)  # chooses its chunk at the first call
    assert 1 <= maml.chunk_size < 8
    assert peak_of_meta_backward(maml) <= budget
    torch.testing.assert_close(flat([p.grad for p in params]), whole)
    roomy = MAML(model, F.mse_loss, 0.1, memory_budget_mb=10 * all_tasks, compile=False)
    roomy.meta_step(batch, torch.optim.SGD(params, lr=0.0))
    assert roomy.chunk_size == 8
    with pytest.raises(metakit.MetakitError, match="below one task's meta-gradient .* MB measured"):
        MAML(model, F.mse_loss, 0.1, memory_budget_mb=1e-6).meta_backward(batch)
    with pytest.raises(metakit.MetakitError, match="not both"):
        MAML(model, F.mse_loss, 0.1, chunk_size=2, memory_budget_mb=10)
    for bad in (0, -1.0, True, "10"):
        with pytest.raises(metakit.MetakitError, match="memory_budget_mb must be"):
            MAML(model, F.mse_loss, 0.1, memory_budget_mb=bad)


def test_the_trainer_compiles_long_runs_by_maml_s_rule_and_short_runs_eagerly():
    from metakit.experiment import load_config
    from metakit.experiment.gradient import compile_by_default

    choice = lambda *overrides: compile_by_default(load_config("sinusoid", list(overrides)))  # noqa: E731
    assert choice("train.iterations=4999") is False
    assert choice("train.iterations=5000") is None  # MAML's compile=None: compile meta_step
    assert choice("train.iterations=10", "train.compile=true") is True
    assert choice("train.iterations=70000", "train.compile=false") is False


def test_compiled_functions_compile_every_shape_statically():
    """With automatic dynamic shapes a recompile went symbolic, and a conv-4 meta-gradient
    compiled in a process after MLP learners' measured 1.6e-3 off through BatchNorm."""
    from metakit.engine import compile_own

    symbolic = []

    def recorder(graph, example_inputs):
        symbolic.append(any(isinstance(t, torch.SymInt) or isinstance(t, torch.Tensor)
                            and any(isinstance(s, torch.SymInt) for s in t.shape) for t in example_inputs))
        return graph.forward

    torch._dynamo.reset()
    first = compile_own(lambda x: (x * 2).sum(), backend=recorder)
    first(torch.ones(3))
    first(torch.ones(4))  # a new shape: recompiled
    compile_own(lambda x: (x * 2).sum(), backend=recorder)(torch.ones(5))  # another "learner"
    assert symbolic == [False, False, False]
