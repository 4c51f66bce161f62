"""Train probes over the whole hooks x timesteps grid of an activation cache, with baselines.

  python train/train_probes.py --cache cache/train --test-cache cache/test --out release/ \
      [--saes release/saes] [--random-cache cache/random-train --random-test-cache cache/random-test]

Kinds (see revelio.steps.probe_grid): "linear" (logistic regression on mean-pooled features), "diff-c" (the paper's conv head on
spatial maps), "sae-linear" (logistic regression on SAE codes, with --saes). Baselines in the same
table: logistic regression on raw pixels, and the same probes on a random-weights copy of the
backbone (--random-cache, from extract_activations.py --random-weights). Without --test-cache a
seeded fraction of the images is held out. Writes probes/<hook>/t<t>/<kind>/, metrics/probe_grid.json
and .csv, and plots/probe_accuracy_<features>_<kind>.png; prints the table and the best cell.
"""

from __future__ import annotations

from revelio.config import parse, run_script
from revelio.steps.probe_grid import ProbeGridConfig, train_probe_grid


def main(argv: list[str] | None = None) -> dict:
    return train_probe_grid(parse(ProbeGridConfig, argv, __doc__))


if __name__ == "__main__":
    run_script(main)
