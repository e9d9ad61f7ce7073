"""The `metakit` command: train, eval, reproduce, list."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from .errors import MetakitError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metakit", description="Meta-learning experiments.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("--json", action="store_true", help="print the results as JSON only")
        p.add_argument("--data", help="directory holding omniglot/ (default $METAKIT_DATA)")
        p.add_argument("--download", action="store_true",
                       help="download missing datasets (checked against their SHA-256 where pinned)")

    p = sub.add_parser("train", help="meta-train from a YAML config (a path or a bundled name)")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.iterations=1000")
    p.add_argument("--out", help="run directory (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    common(p)

    p = sub.add_parser("eval", help="evaluate a trained run directory on fresh tasks")
    p.add_argument("run_dir")
    p.add_argument("--set", action="append", default=[], metavar="eval.KEY=VALUE",
                   help="change an evaluation setting, e.g. --set eval.normalisation=inductive")
    p.add_argument("--results", help="write the results here (default: a new RUN_DIR/results-eval*.json)")
    p.add_argument("--replace", action="store_true", help="write over the run's own results.json")
    common(p)

    p = sub.add_parser("reproduce", help="run a paper's headline experiment")
    p.add_argument("name")
    p.add_argument(
        "--budget",
        default="full",
        help="full (the config), smoke, hour (the half-cheetah runs) or baselines (RL^2 tables without RL^2)",
    )
    p.add_argument("--out", help="output directory (default runs/reproduce-<name>)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--algo", help="omniglot-minimal: maml, fomaml, reptile, protonet or matching")
    p.add_argument("--runs", help="omniglot-minimal: also score Lake's one-shot runs in this directory")
    common(p)

    p = sub.add_parser("omniglot-runs", help="score Lake et al.'s 20 one-shot runs")
    p.add_argument("--runs", required=True, help="directory holding run01 ... run20")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--checkpoint", metavar="RUN_DIR", help="a trained Omniglot run directory")
    how.add_argument(
        "--baseline",
        choices=["mhd"],
        help="mhd: modified Hausdorff distance nearest neighbour (Lake et al. 2015)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--json", action="store_true", help="print the results as JSON only")

    sub.add_parser("list", help="bundled configs and reproductions")

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    finished, code = False, 1
    try:
        code = _run(args)
        finished = True
        return code
    except MetakitError as error:
        print(f"metakit: error: {error}", file=sys.stderr)
        code = 2
        return code
    except KeyboardInterrupt:
        print(f"metakit: interrupted. {_resume_advice(args, argv)}", file=sys.stderr)
        code = 130
        return code
    finally:
        if "torch.distributed" in sys.modules and sys.modules["torch.distributed"].is_initialized():
            from . import distributed  # noqa: PLC0415 (torch is loaded by now)

            distributed.shutdown(clean=finished)  # a failed rank must not wait for the others
            if sys.exc_info()[0] is None:  # an unexpected error goes on to print its traceback
                distributed.exit_process(code)


def _resume_advice(args, argv: list[str]) -> str:
    """Where the last checkpoint is, and the exact command that continues from it."""
    out = getattr(args, "resolved_out", None)
    if out is None:
        return "Nothing had been trained yet."
    checkpoints = sorted(out.glob("**/checkpoint.pt"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        return f"No checkpoint had been written in {out} yet; run the same command again to start over."
    command = ["metakit", *[a for a in argv if a != "--resume"]]
    if "--out" not in argv:
        command += ["--out", str(out)]
    return (f"The last checkpoint is {checkpoints[-1]}; continue with: "
            f"{shlex.join([*command, '--resume'])}")


def _run(args) -> int:
    from .experiment import config as cfg
    from .experiment.reproduce import format_table, reproduce, reproduction_names
    from .experiment.runner import check_device, evaluate_run, new_results_path, train

    if args.command == "omniglot-runs":
        from .data.lake_runs import mhd_classifier, read_runs, score_runs
        from .experiment.lake import score_checkpoint

        if args.checkpoint:
            results = score_checkpoint(args.runs, args.checkpoint, check_device(args.device))
        else:
            results = score_runs(read_runs(args.runs), mhd_classifier)
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            for row in results["runs"]:
                print(f"{row['run']}: {row['error']:.1f}% error")
            print(f"mean: {results['mean_error']:.2f}% error")
        return 0
    if args.command == "list":
        print("configs:       ", " ".join(cfg.bundled_configs()))
        print("reproductions: ", " ".join(reproduction_names()))
        return 0
    progress = not (args.quiet or args.json)
    if args.data:
        os.environ["METAKIT_DATA"] = args.data  # read by metakit.data.omniglot.data_dir
    if args.download:
        os.environ["METAKIT_DOWNLOAD"] = "1"  # read by metakit.data.omniglot.load_omniglot
    if args.command == "train":
        config = cfg.load_config(args.config, args.set)
        out = args.resolved_out = Path(args.out or f"runs/{config.name}")
        results = train(config, out, resume=args.resume, device=args.device, progress=progress)
    elif args.command == "eval":
        if args.results and args.replace:
            raise MetakitError("pass --results FILE or --replace, not both")
        run_dir = Path(args.run_dir)
        target = run_dir / "results.json" if args.replace else Path(args.results) if args.results else None
        target = target or new_results_path(run_dir)
        results = evaluate_run(run_dir, check_device(args.device), args.set, target, progress=progress)
        if not args.json:
            print(f"results: {target}")
    else:
        out = args.resolved_out = Path(
            args.out or f"runs/reproduce-{args.name}" + (f"-{args.algo}" if args.algo else ""))
        results = reproduce(
            args.name,
            out,
            args.budget,
            args.device,
            progress,
            args.resume,
            args.algo,
            Path(args.runs) if args.runs else None,
        )
    from . import distributed  # noqa: PLC0415 (torch only when a command needs it)

    if not distributed.is_main():
        return 0  # under torchrun, rank 0 reports
    if args.json:
        print(json.dumps(results, indent=2))
    elif args.command == "reproduce":
        print(format_table(results))
        print(f"results: {out / 'results.json'}")
    elif "returns_after_steps" in results:
        print(
            f"{results['name']} ({results['algorithm']}, {results['env']}): mean episode return on "
            f"{results['eval_tasks']} new tasks after k policy-gradient steps"
        )
        for k, value in results["returns_after_steps"].items():
            print(f"  {k} steps: {value:.2f}")
    elif "trial_return" in results:
        print(
            f"{results['name']} (rl2, {results['env']}): mean total reward of a "
            f"{results['episodes']}-episode trial on {results['eval_tasks']} new tasks: "
            f"{results['trial_return']:.2f} ± {results['ci95']:.2f}"
        )
    elif "accuracy_by_instance" in results:
        print(f"{results['name']} ({results['algorithm']}): percent correct at each presentation of a class, "
              f"{results['eval_episodes']} held-out episodes")
        for k, value in results["accuracy_by_instance"].items():
            print(f"  {k:>3}: {value:.1f} ± {results['ci95_by_instance'][k]:.1f}   "
                  f"(nearest neighbour {results['nearest_neighbour_by_instance'][k]:.1f})")
    elif "accuracy" in results:
        print(
            f"{results['name']} ({results['algorithm']}): accuracy on held-out alphabets, "
            f"{results['eval_tasks']} episodes, normalisation {results['normalisation']}"
        )
        for key, value in results["accuracy"].items():
            print(f"  {key}: {100 * value:.2f}% ± {100 * results['ci95'][key]:.2f}")
    elif "final_loss" in results:
        print(f"{results['name']} (l2o): mean final loss on {results['eval_problems']} held-out problems "
              "(baselines at the learning rate tuned on training problems)")
        for case, row in results["final_loss"].items():
            cells = ", ".join(f"{name} {'diverged' if v is None else f'{v:.4g}'}" for name, v in row.items())
            print(f"  {case}: {cells}")
    elif "mse" in results:
        print(f"{results['name']} (meta-critic): test MSE on {results['eval_tasks']} unseen tasks after "
              f"{results['meta_test_steps']} actor steps")
        for k, row in results["mse"].items():
            cells = ", ".join(f"{name} {'diverged' if v is None else f'{v:.3f}'}" for name, v in row.items())
            print(f"  K={k}: {cells}")
    elif "games_to_195" in results:
        ev = results["eval_tasks"]
        print(f"{results['name']} (meta-critic): training games until the greedy return reaches "
              f"{ev['threshold']:g}, {ev['lengths']} unseen pole lengths x {ev['seeds']} seeds")
        for name, games in results["games_to_195"].items():
            print(f"  {name}: {'never' if games is None else f'{games:.1f}'} "
                  f"({100 * results['reached_195'][name]:.0f}% reached it)")
    elif "reward" in results and "pulls" in results:
        print(f"{results['name']} (meta-critic): expected reward after {results['pulls']} pulls, "
              f"{results['eval_tasks']} unseen tasks")
        for arms, row in results["reward"].items():
            print(f"  {arms} arms: " + ", ".join(f"{name} {v:.3f}" for name, v in row.items()))
    elif "mse_after_steps" not in results:  # a family without a summary of its own: its results as they are
        print(json.dumps(results, indent=2))
    else:
        print(
            f"{results['name']} ({results['algorithm']}): query MSE after k inner steps, "
            f"{results['eval_tasks']} tasks, {results['eval_support_shots']}-shot"
        )
        for k, mse in results["mse_after_steps"].items():
            mean = "diverged" if mse is None else f"{mse:.4f} ± {results['ci95'][k]:.4f}"
            print(
                f"  {k:>3} steps: mean {mean}   median {results['median_after_steps'][k]:.4f}"
                f"   diverged tasks {results['diverged_tasks'][k]}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
