"""The MHD baseline on Lake-format one-shot runs made from the minimal Omniglot splits.

The official 20 runs (from the evaluation alphabets) are not available here; this builds 20
runs the same way (20-way, within one alphabet, training and test images by two different
drawers) from images_background_small1/2 and scores Lake et al.'s modified Hausdorff
distance baseline on them (38.8% error on the official runs). Writes the runs to --out and
benchmarks/results/lake-runs-minimal-mhd.json.

    python benchmarks/lake_runs_minimal.py [--data DIR] [--out DIR] [--seed 0] [--alphabets A B ...]
"""
from __future__ import annotations

import argparse
import json
import time
import zipfile
from pathlib import Path

import torch

from metakit.data.lake_runs import make_runs, mhd_classifier, read_runs, score_runs
from metakit.data.omniglot import MINIMAL, data_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", default=None, help="directory holding the minimal zips (default $METAKIT_DATA/omniglot)"
    )
    parser.add_argument("--out", default="runs/lake-runs-minimal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--alphabets",
        nargs="*",
        default=None,
        help="only these alphabets (e.g. the held-out Korean Balinese of the omniglot configs)",
    )
    parser.add_argument(
        "--results", default="lake-runs-minimal-mhd.json", help="file name in benchmarks/results"
    )
    args = parser.parse_args()
    groups: dict[str, dict[str, list[bytes]]] = {}
    for name in MINIMAL:
        with zipfile.ZipFile(data_dir(args.data) / f"{name}.zip") as z:
            for path in sorted(n for n in z.namelist() if n.endswith(".png")):
                _, alphabet, character, _ = path.split("/")
                if args.alphabets is not None and alphabet not in args.alphabets:
                    continue
                groups.setdefault(alphabet, {}).setdefault(character, [])
                drawings = groups[alphabet][character]
                if len(drawings) < 20:  # Latin and Greek are in both splits: keep one copy
                    drawings.append(z.read(path))
    out = make_runs(groups, Path(args.out), generator=torch.Generator().manual_seed(args.seed))
    start = time.perf_counter()
    results = score_runs(read_runs(out), mhd_classifier)
    results.update(
        seconds=round(time.perf_counter() - start, 1),
        seed=args.seed,
        paper_official_runs=38.8,
        alphabets=args.alphabets or sorted(groups),
    )
    for row in results["runs"]:
        print(f"{row['run']}: {row['error']:.1f}%")
    print(
        f"MHD mean error {results['mean_error']:.2f}% on 20 runs from the minimal splits "
        f"(official runs, Lake et al.: 38.8%); {results['seconds']} s"
    )
    target = Path(__file__).parent / "results" / args.results
    target.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
