"""Measurement: held-out NMSE against dead features for SAE sizes, to choose a release's expansion and k.

For every cell of a training cache (or ``--cells``), trains one SAE per (expansion, k) with the
release trainer (``revelio.sae.training.train_sae``, same recipe and seed) and evaluates it on a
test cache of other images (``SAEEvaluator``): normalized MSE (FVU), and the share of features that
never fire on any test row ("dead on held-out images", what the release's metrics report).
Smaller dictionaries and larger k leave fewer features dead but keep fewer, coarser directions;
the table shows the trade so the choice is made by measurement.

Run: ``.venv/bin/python bench/sae_sizes.py --train-cache CACHE --test-cache CACHE --expansions 2 4 8 --ks 4 8``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from revelio.cache import ActivationCache, find_cells  # noqa: E402
from revelio.sae.evaluation import SAEEvaluator  # noqa: E402
from revelio.sae.training import SAETrainConfig, train_sae  # noqa: E402


def held_out(sae, cache: ActivationCache) -> dict[str, float]:
    evaluator = SAEEvaluator(sae)
    for chunk in cache.chunks(rows=65536, columns=("activations",)):
        evaluator.add(chunk["activations"])
    return evaluator.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-cache", type=Path, required=True)
    parser.add_argument("--test-cache", type=Path, required=True)
    parser.add_argument("--cells", nargs="*", default=None, help="HOOK:T (default: every cell of the pooling)")
    parser.add_argument("--pooling", default="mean", choices=["mean", "none"])
    parser.add_argument("--expansions", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--tokens", type=int, default=1_000_000, help="training tokens per SAE")
    parser.add_argument("--dead-tokens", type=int, nargs="+", default=[500_000], help="AuxK's dead threshold(s) to try")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()

    cells = [c for c in find_cells(args.train_cache) if c.pooling == args.pooling]
    if args.cells:
        wanted = {(h, int(t)) for h, _, t in (c.rpartition(":") for c in args.cells)}
        cells = [c for c in cells if (c.hook, c.timestep) in wanted]
    rows = []
    print(f"{'cell':<22} {'exp':>4} {'k':>3} {'dead_tok':>9} {'d_sae':>6} {'NMSE':>8} {'dead':>7} {'s':>6}", flush=True)
    for cell in cells:
        train, test = ActivationCache(args.train_cache / cell.path), ActivationCache(args.test_cache / cell.path)
        for expansion in args.expansions:
            for k in args.ks:
                for dead_tokens in args.dead_tokens:
                    config = SAETrainConfig(expansion=expansion, k=k, total_tokens=args.tokens, dead_tokens=dead_tokens)
                    start = time.perf_counter()
                    with tempfile.TemporaryDirectory() as out:
                        sae = train_sae(train, config, out, progress=False)
                    seconds = time.perf_counter() - start
                    result = held_out(sae, test)
                    rows.append({"hook": cell.hook, "timestep": cell.timestep, "pooling": cell.pooling, "expansion": expansion,
                                 "k": k, "dead_tokens": dead_tokens, "d_sae": sae.d_sae, "train_rows": train.num_rows,
                                 "test_rows": test.num_rows, "normalized_mse": result["normalized_mse"],
                                 "dead_fraction": result["dead_fraction"], "seconds": seconds})
                    print(f"{cell.hook + ' t=' + str(cell.timestep):<22} {expansion:>4} {k:>3} {dead_tokens:>9} {sae.d_sae:>6} "
                          f"{result['normalized_mse']:>8.4f} {result['dead_fraction']:>7.3f} {seconds:>6.1f}", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
