"""Learning to learn by gradient descent by gradient descent (Andrychowicz et al. 2016): a
coordinatewise LSTM (metakit.optim) meta-trained on batches of optimisation problems, then
compared with SGD, Nesterov momentum, RMSprop and Adam, each with its learning rate tuned on
training problems, on held-out problems.

One runner iteration is one epoch: a fresh batch of problems optimised for task.steps steps
from its starting point, in truncations of train.unroll steps. Each truncation's meta-loss is
the sum of the objective over its steps; the optimisee's gradient enters the LSTM as an input
(second derivatives dropped) and nothing is backpropagated across truncations.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import distributed
from ..data.mnist import load_classification
from ..errors import MetakitError
from ..optim import CoordinatewiseLSTM, LearnedOptimizer
from ..optim.learned import PREPROCESSING
from ..tasks.optimisation import ACTIVATIONS, MLPProblems, QuadraticProblems
from .config import check, non_negative, positive, sizes
from .evaluate import mean_ci95, progress_bar
from .protocol import Algorithm

PROBLEMS = ["mlp", "quadratic"]
MLP = ("mlp",)
DATASETS = ["digits", "mnist"]
BASELINES = {  # name -> torch.optim factory at a learning rate
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "nesterov": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
    "rmsprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
}
LEARNED = "learned"
GRID = [round(10 ** (e / 2), 6) for e in range(-8, 3)]  # half decades from 1e-4 to 10


@dataclass
class ProblemConfig:
    name: str = check(lambda v: v in PROBLEMS, f"one of {PROBLEMS}", default="quadratic")
    num_problems: int = check(*positive, default=128)  # problems per epoch, one tensor computation
    steps: int = check(*positive, default=100)  # optimisation steps per problem (an epoch)
    dims: int = check(*positive, only=("quadratic",), default=10)
    dataset: str = check(lambda v: v in DATASETS, f"one of {DATASETS}", only=MLP, default="digits")
    hidden_sizes: list[int] = check(lambda v: len(v) > 0 and sizes[0](v), "one or more sizes > 0", only=MLP,
                                    default_factory=lambda: [20])
    activation: str = check(lambda v: v in ACTIVATIONS, f"one of {sorted(ACTIVATIONS)}", only=MLP,
                            default="sigmoid")
    batch_size: int = check(*positive, only=MLP, default=128)


@dataclass
class L2OSection:
    name: str = check(lambda v: v == "l2o", "'l2o'", default="l2o")
    hidden_size: int = check(*positive, default=20)
    layers: int = check(*positive, default=2)
    preprocessing: str = check(lambda v: v in PREPROCESSING, f"one of {list(PREPROCESSING)}",
                               default="log-sign")
    p: float = check(*positive, default=10.0)
    output_scale: float = check(*positive, default=0.1)


@dataclass
class L2OTrainConfig:
    iterations: int = check(*positive, default=2000)  # epochs
    unroll: int = check(*positive, default=20)  # steps per truncation of backpropagation through time
    lr: float = check(*positive, default=1e-3)  # Adam on the optimiser's weights
    log_every: int = check(*positive, default=50)
    checkpoint_every: int = check(*positive, default=100)


@dataclass
class L2OEvalConfig:
    num_problems: int = check(*positive, default=100)  # held-out problems per case
    tune_problems: int = check(*positive, default=20)  # training problems for the baselines' grid search
    # null: the task's standard cases (quadratic-100/200; mlp-100/200, mlp-40units, mlp-2layers, mlp-relu)
    cases: list[str] | None = None
    baselines: list[str] = check(lambda v: set(v) <= set(BASELINES), f"a subset of {sorted(BASELINES)}",
                                 default_factory=lambda: list(BASELINES))
    learning_rates: list[float] = check(lambda v: len(v) > 0 and all(lr > 0 for lr in v),  # 1e-4 .. 10
                                        "learning rates > 0", default_factory=lambda: GRID)
    seed: int = check(*non_negative, default=1234)


@dataclass
class L2OConfig:
    name: str = "l2o-quadratic"
    seed: int = 0
    task: ProblemConfig = field(default_factory=ProblemConfig)
    algorithm: L2OSection = field(default_factory=L2OSection)
    train: L2OTrainConfig = field(default_factory=L2OTrainConfig)
    eval: L2OEvalConfig = field(default_factory=L2OEvalConfig)


def standard_cases(task: ProblemConfig) -> list[str]:
    cases = [f"{task.name}-{task.steps}", f"{task.name}-{2 * task.steps}"]
    if task.name == "mlp":
        cases += [f"mlp-{2 * task.hidden_sizes[0]}units", f"mlp-{len(task.hidden_sizes) + 1}layers",
                  "mlp-relu" if task.activation != "relu" else "mlp-sigmoid"]
    return cases


def case_settings(task: ProblemConfig, case: str) -> dict:
    """A case's problem: `{task}-N` (N steps), `mlp-Kunits` (K units in every hidden layer),
    `mlp-Llayers` (L hidden layers of the first layer's width), `mlp-relu` / `mlp-sigmoid`."""
    settings = {"steps": task.steps, "hidden_sizes": list(task.hidden_sizes), "activation": task.activation}
    rest = case[len(task.name) + 1:] if case.startswith(f"{task.name}-") else None
    units = re.fullmatch(r"([1-9]\d*)units", rest or "")
    layers = re.fullmatch(r"([1-9]\d*)layers", rest or "")
    if rest is not None and re.fullmatch(r"[1-9]\d*", rest):
        settings["steps"] = int(rest)
    elif task.name == "mlp" and units:
        settings["hidden_sizes"] = [int(units[1])] * len(task.hidden_sizes)
    elif task.name == "mlp" and layers:
        settings["hidden_sizes"] = [task.hidden_sizes[0]] * int(layers[1])
    elif task.name == "mlp" and rest in ACTIVATIONS:
        settings["activation"] = rest
    else:
        forms = f"'{task.name}-STEPS'" + (", 'mlp-Kunits', 'mlp-Llayers', 'mlp-relu' or 'mlp-sigmoid'"
                                          if task.name == "mlp" else "")
        raise MetakitError(f"eval.cases entry {case!r} is not a case of task {task.name!r}; expected {forms}")
    return settings


def meta_unroll(net: CoordinatewiseLSTM, problems, theta: torch.Tensor, state: list[torch.Tensor], steps: int,
                generator: torch.Generator):
    """One truncation: `steps` learned updates from (theta, state), both detached first so that
    nothing is backpropagated into earlier truncations. Returns (meta-loss: the sum over the
    truncation's steps of the objective averaged over problems, theta, state)."""
    theta, state = theta.detach().requires_grad_(), [s.detach() for s in state]
    meta_loss = 0.0
    for _ in range(steps):
        loss = problems.loss(theta, generator)
        meta_loss = meta_loss + loss.mean()
        (grad,) = torch.autograd.grad(loss.sum(), theta, retain_graph=True)  # an input: no create_graph
        update, state = net(grad.flatten(), state)
        theta = theta + update.view_as(theta)
    meta_loss = meta_loss + problems.loss(theta, generator).mean()  # where the last update landed
    return meta_loss, theta, state


def run_optimizer(problems, theta0: torch.Tensor, make_optimizer, steps: int, seed: int,
                  every_step: bool = True) -> torch.Tensor:
    """Optimise every problem from theta0 with a torch.optim optimiser (the same minibatches for
    every optimiser: they come from `seed`). The objective [steps + 1, P] after each step, or
    [1, P] after the last; inf for problems (or a learned optimiser) that diverged."""
    theta = theta0.clone().requires_grad_()
    optimizer = make_optimizer([theta])
    generator = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(steps + 1):
        if every_step or step == steps:
            with torch.no_grad():
                curve.append(problems.objective(theta))
        if step == steps:
            break
        optimizer.zero_grad()
        problems.loss(theta, generator).sum().backward()
        try:
            optimizer.step()
        except MetakitError:  # the learned optimiser refuses non-finite gradients: diverged
            return torch.full((steps + 1 if every_step else 1, problems.num_problems), float("inf"))
    curve = torch.stack(curve).cpu()
    return torch.where(torch.isfinite(curve), curve, float("inf"))


class L2OExperiment(Algorithm):
    Config = L2OConfig
    named_sections = {"task": PROBLEMS}
    curve = {"meta_loss": "meta-loss (objective per unrolled step)",
             "final_loss": "objective after the last step"}
    curve_ylabel = "epochs (problems optimised)"
    curve_log_scale = True
    shard_key = "task.num_problems"  # under torchrun each rank optimises its share of the problems

    def __init__(self, config: L2OConfig, device: str = "cpu"):
        super().__init__(config, device)
        torch.manual_seed(config.seed)  # the network's initial weights
        a = config.algorithm
        self.net = CoordinatewiseLSTM(a.hidden_size, a.layers, a.preprocessing, a.p, a.output_scale)
        self.net.to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.train.lr)
        self._data = {}  # split -> (images, labels) of the MLP problems' dataset
        self.evaluated = None

    @classmethod
    def check_config(cls, config: L2OConfig) -> None:
        if config.train.unroll > config.task.steps:
            raise MetakitError(f"train.unroll ({config.train.unroll}) must be at most task.steps "
                               f"({config.task.steps})")
        for case in config.eval.cases or []:
            case_settings(config.task, case)

    def trained(self):
        """metakit.load of an l2o run returns the trained network itself (with `.config`)."""
        self.net.config = self.config
        return self.net

    def problems(self, split: str, num_problems: int, generator: torch.Generator, **settings):
        task = self.config.task
        if task.name == "quadratic":
            return QuadraticProblems(num_problems, task.dims, generator, self.device)
        if split not in self._data:
            images, labels = load_classification(task.dataset, split)
            self._data[split] = images.to(self.device), labels.to(self.device)
        images, labels = self._data[split]
        return MLPProblems(images, labels, num_problems, settings.get("hidden_sizes", task.hidden_sizes),
                           settings.get("activation", task.activation), task.batch_size, classes=10)

    def step(self, generator):
        task, unroll = self.config.task, self.config.train.unroll
        # under torchrun each rank optimises its share of the problems (drawn problem-first, as
        # one process draws them) and the meta-gradients are averaged: one process's update
        with distributed.task_share(task.num_problems):
            problems = self.problems("train", task.num_problems // distributed.world_size(), generator)
            theta = problems.init(generator)
            state = self.net.initial_state(theta.numel())
            meta_losses = []
            for start in range(0, task.steps, unroll):
                steps = min(unroll, task.steps - start)
                meta_loss, theta, state = meta_unroll(self.net, problems, theta, state, steps, generator)
                self.optimizer.zero_grad(set_to_none=True)
                meta_loss.backward()
                distributed.average_gradients(self.net.parameters())
                self.optimizer.step()
                meta_losses.append(distributed.average(meta_loss.detach()) / (steps + 1))
        with torch.no_grad():
            final = distributed.average(problems.objective(theta).mean())
        return {"meta_loss": sum(meta_losses) / len(meta_losses), "final_loss": final}

    def state_dict(self):
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])

    def tune(self, settings: dict) -> dict[str, float]:
        """Each baseline's learning rate: the grid value with the lowest mean final objective on
        eval.tune_problems training problems (never the held-out ones)."""
        ev = self.config.eval
        problems = self.problems("train", ev.tune_problems, torch.Generator().manual_seed(ev.seed + 1),
                                 **settings)
        theta0 = problems.init(torch.Generator().manual_seed(ev.seed + 2))
        chosen = {}
        for name in ev.baselines:
            finals = {lr: run_optimizer(problems, theta0, lambda params: BASELINES[name](params, lr),
                                        settings["steps"], ev.seed + 3, every_step=False).mean().item()
                      for lr in ev.learning_rates}
            chosen[name] = min(finals, key=finals.get)
        return chosen

    def evaluate(self) -> dict:
        ev = self.config.eval
        cases = ev.cases or standard_cases(self.config.task)
        results = {key: {} for key in ("final_loss", "final_loss_ci95", "learning_rates", "curves",
                                       "curves_ci95", "on_grid_edge")}
        bar = progress_bar(len(cases), "tuning baselines and evaluating cases", self.progress)
        for case in cases:
            settings = case_settings(self.config.task, case)
            rates = self.tune(settings)
            edges = (min(ev.learning_rates), max(ev.learning_rates))
            held_out = torch.Generator().manual_seed(ev.seed)
            problems = self.problems("test", ev.num_problems, held_out, **settings)
            theta0 = problems.init(torch.Generator().manual_seed(ev.seed + 4))
            makers = {LEARNED: lambda params: LearnedOptimizer(params, self.net)}
            makers.update({name: (lambda params, name=name: BASELINES[name](params, rates[name]))
                           for name in ev.baselines})
            for key in results:
                results[key][case] = {}
            for name, make in makers.items():
                curve = run_optimizer(problems, theta0, make, settings["steps"], ev.seed + 5)
                stats = [mean_ci95(row) for row in curve]
                results["final_loss"][case][name], results["final_loss_ci95"][case][name] = stats[-1]
                results["curves"][case][name] = [_round(m) for m, _ in stats]
                results["curves_ci95"][case][name] = [_round(c) for _, c in stats]
            results["learning_rates"][case] = rates
            results["on_grid_edge"][case] = sorted(name for name, lr in rates.items() if lr in edges)
            bar.update()
        bar.close()
        self.evaluated = results  # what plots() draws
        return {**results, "eval_problems": ev.num_problems, "tune_problems": ev.tune_problems,
                "learning_rate_grid": ev.learning_rates, "cases": cases}

    def plots(self, run_dir: Path) -> None:
        if self.evaluated is not None:
            plot_loss_curves(self.evaluated, Path(run_dir) / "loss_curves.png")


def _round(value):
    return None if value is None else float(f"{value:.6g}")


def plot_loss_curves(results: dict, out: Path) -> None:
    """One panel per case: the mean objective (95% band) against step, every optimiser (the
    paper's Figures 4 and 5)."""
    from matplotlib.figure import Figure  # noqa: PLC0415 (matplotlib only when plotting)

    from .plots import save  # noqa: PLC0415

    cases = list(results["curves"])
    columns = min(3, len(cases))
    rows = -(-len(cases) // columns)
    fig = Figure(figsize=(4.5 * columns, 3.6 * rows))
    axes = fig.subplots(rows, columns, squeeze=False).flatten()
    for ax in axes[len(cases):]:
        ax.set_visible(False)
    for ax, case in zip(axes, cases):
        for i, (name, mean) in enumerate(results["curves"][case].items()):
            ci = results["curves_ci95"][case][name]
            steps = range(len(mean))
            if any(m is None for m in mean):
                continue  # diverged: nothing to draw
            label = name if name == LEARNED else f"{name} (lr {results['learning_rates'][case][name]:.2g})"
            ax.plot(steps, mean, color=f"C{i}", label=label, lw=2 if name == LEARNED else 1)
            low = [m - (c or 0) for m, c in zip(mean, ci)]
            high = [m + (c or 0) for m, c in zip(mean, ci)]
            ax.fill_between(steps, low, high, color=f"C{i}", alpha=0.2)
        ax.set(yscale="log", xlabel="step", ylabel="objective", title=case)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save(fig, out)
