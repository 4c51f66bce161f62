"""Train k-SAEs on cached activations: one cell, or a whole grid of hooks x timesteps x poolings.

  python train/train_sae.py --cache cache/ --out saes/ [--hooks mid_block] [--timesteps 25] \
      [--poolings mean] --expansion 16 --k 32 --tokens 2000000

Cells are folders ``<cache>/<hook>/t<timestep>/<pooling>/``; each SAE lands in the same relative
folder under ``--out`` (the release layout), with its feature statistics in stats.safetensors.
Interrupted runs resume from their last checkpoint when the command is run again. To shard a
grid over processes or GPUs:

  accelerate launch --multi_gpu --num_processes 2 train/train_sae.py --cache cache/ --out saes/
"""

from __future__ import annotations

from revelio.config import parse_many, run_script
from revelio.steps.sae_grid import SAEGridConfig, train_sae_grid
from revelio.sae.training import SAETrainConfig


def main(argv: list[str] | None = None) -> None:
    grid, training = parse_many([SAEGridConfig, SAETrainConfig], argv, __doc__)
    train_sae_grid(grid, training)


if __name__ == "__main__":
    run_script(main)
