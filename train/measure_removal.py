"""Measure concept removal on a release: UA, IRA, CRA, pixel change, Fréchet distance and artifacts.

For each concept of each label set (--label-sets, default every one of the release: the pixel
model's classes; the text model's classes and colours), its SAE features are chosen at every hook
of --hooks and every timestep of the sampler (SAeUron's score: the share of activation mass on the
concept's held-out images minus on the others', read by the nearest cell's spatial SAE) and removed
while every source is generated with fixed seeds (each class of a class-conditional model; for a
text model, prompts of the caption template covering every concept of every label set at least
twice), by each of --methods:

- ``ablate``: the features are set to --multiplier x their value (0: ablated) where they fire, the
  SAE's error kept;
- ``replace``: where they fire, the activation becomes the mean activation of the held-out images
  without the concept there (an activation the block produces, so in distribution).

Each label set's reference classifier (trained on real images only) judges: UA (the concept's images
no longer recognised as it), IRA (the same set's other concepts still recognised), CRA (every other
label set still recognised: removing a colour must keep classes, and the other way round; null with
one); image quality is a Fréchet distance on the default label set's classifier's penultimate
features against real test images and the share of images it cannot place with --confidence (the
artifact proxy).

  python train/measure_removal.py --release bundled --out releases/fashion-mnist/metrics
  python train/measure_removal.py --release bundled-text --hooks up_blocks.0 --out releases/fashion-mnist-text/metrics
"""

from __future__ import annotations

from revelio.config import parse, run_script
from revelio.formats.removal import Removal
from revelio.release.removal_measurement import RemovalMeasureConfig, measure_removal


def main(argv: list[str] | None = None) -> Removal:
    return measure_removal(parse(RemovalMeasureConfig, argv, __doc__))


if __name__ == "__main__":
    run_script(main)
