"""Build a complete release from a trained class-conditional diffusion model, with one command.

  python train/build_release.py --model artifacts/default-model/pipeline --out releases/fashion-mnist \
      --hooks down_blocks.1 down_blocks.2 mid_block up_blocks.0 up_blocks.1 --timesteps 25 100 300 600

Runs the pipeline (each step is printed and recorded in release.json as the train/ command that
reproduces it): the quality gate (reference classifier + samples), activation caches of training,
test and random-weights images, the SAE grid for both poolings, and the probe grid with
baselines. Then SAE metrics on the held-out test images, each feature's mean activation at every
timestep, exemplar thumbnails, the SAE metric pictures, release.json and the model card from
hub_cards/release.md. Caches and SAE checkpoints live in --work and are reused when the command
is run again.
"""

from __future__ import annotations

import shlex
import sys

from revelio.config import parse, run_script
from revelio.release.build import ReleaseConfig, build_release


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    build_release(parse(ReleaseConfig, argv, __doc__), "python " + shlex.join(["train/build_release.py", *argv]))


if __name__ == "__main__":
    run_script(main)
