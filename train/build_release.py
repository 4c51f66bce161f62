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
and the build finishes with the same release; a step whose inputs changed (other settings, or
other files in the dataset or model folder) is rebuilt, and the log says why.

  --preset smoke   a first look in minutes on a CPU (few images and timesteps, short SAE training)
  --preset paper   the paper's SD1.5 setting (mid_block, up_blocks.0/1 at t=25, 16x SAEs, k 32)

--dataset takes fashion-mnist, a Hub dataset id, or an image folder: class folders
(<root>/<class>/<image>, split 80/20 into train and test, stratified by class, seeded) or the
user's own split (<root>/train/<class>/..., <root>/test/<class>/...).
"""

from __future__ import annotations

import shlex
import sys

from revelio.config import parse, run_script
from revelio.release.build import build_release
from revelio.release.presets import preset_flags
from revelio.release.release_config import ReleaseConfig


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    config = parse(ReleaseConfig, argv, __doc__)
    if config.preset != "default":  # the preset's flags first, so the ones given here win
        config = parse(ReleaseConfig, [*preset_flags(config.preset), *argv], __doc__)
    build_release(config, "python " + shlex.join(["train/build_release.py", *argv]))


if __name__ == "__main__":
    run_script(main)
