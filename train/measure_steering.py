"""Measure what SAE steering does on a release: success rate towards each class and side effect.

For each target class c of the release's dataset, the features most selective for c are clamped
at every chosen SAE while generating from every other source, with the same seeds as an
unsteered baseline. Sources follow the backbone: its classes when they are the dataset's, one
prompt per class for text models (--source-prompt, "a photo of a {}"; "" for the empty prompt),
one unconditional source for unconditional models. The release's reference classifier (trained on
real images only), or its best probe when it has none, says how many images are c: the success
rate, against the unsteered baseline's rate. Two ways to clamp:

- ``--clamp-to class-map`` (spatial SAEs, the default): the features with the most extra
  activation on c's images (summed over locations) are clamped to --strengths x their mean
  activation map on c's images, measured on the release's held-out test images;
- ``--clamp-to max``: the features carrying most activation on c among those mostly active on it
  (label purity) are clamped to --strengths x their largest training activation, everywhere.

With ``--map-images N`` the features chosen on all held-out images are clamped to the mean map of
the N typical held-out images of c (nearest c's mean code over the steered SAEs) instead: a mean
over every image of c blurs a class whose layout varies into activations no real image has.

Side effect: the same number of features unrelated to any class (the heaviest live ones that no
class's selection picks), clamped the same way (to --strengths x their mean map over all images,
or x their max), shows how far images move in pixel space (mean absolute change in [0, 1] units)
and how often their predicted class changes, next to the same numbers for class steering.

Image quality (with a reference classifier): the Fréchet distance on its penultimate features
between the images steered towards c and the real test images of c, beside the same seeds
unsteered, the model's own images of c and as many other real images of c (the floor).

  python train/measure_steering.py --release bundled --cells up_blocks.1:100 --window 999 0 --strengths 1 2 3
"""

from __future__ import annotations

from typing import Any

from revelio.config import parse, run_script
from revelio.release.steering_measurement import SteeringMeasureConfig, measure_steering


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return measure_steering(parse(SteeringMeasureConfig, argv, __doc__))


if __name__ == "__main__":
    run_script(main)
