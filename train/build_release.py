"""Build a complete release for any diffusers backbone and any labelled image dataset, in one command.

  python train/build_release.py --model artifacts/default-model/pipeline --out releases/fashion-mnist \
      --hooks down_blocks.1 mid_block up_blocks.0 up_blocks.1 --timesteps 25 100 300 600

Runs named stages (each step is logged and recorded in release.json as the train/ command that
reproduces it): the quality gate (class-conditional backbones), activation caches of training,
test and random-weights images, the SAE grid for both poolings, the probe grid with baselines,
the SAEs' held-out metrics, exemplars, release.json, held-out purity, a short steering
measurement (--no-steering skips it) and the model card. Each step's options are flags under its
prefix: --extract-*, --pooled-sae-*, --spatial-sae-*, --probe-*, --gate-*, --steering-*. Caches and
SAE checkpoints live in --work; run the same command again after an interruption (even kill -9)
and the build finishes with the same release.
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
