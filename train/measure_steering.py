"""Measure what SAE steering does on a class-conditional release: success rate and side effect.

For each target class c, the features most selective for c are clamped at every chosen SAE while
generating images of every OTHER class, with the same seeds as an unsteered baseline. The
release's reference classifier (trained on real images only) then says how many images it labels
c: the success rate, against the unsteered baseline's rate. Two ways to clamp:

- ``--clamp-to class-map`` (spatial SAEs, the default): the features with the most extra
  activation on c's images (summed over locations) are clamped to --strength x their mean
  activation map on c's images, measured on the release's held-out test images;
- ``--clamp-to max``: the features carrying most activation on c among those mostly active on it
  (label purity) are clamped to --strength x their largest training activation, everywhere.

Side effect: the same number of features unrelated to any class (the lowest label purity),
clamped the same way (to --strength x their mean map over all images, or x their max), shows how
far images move in pixel space (mean absolute change in [0, 1] units) and how often their
predicted class changes, next to the same numbers for class steering.

  python train/measure_steering.py --release bundled --cells mid_block:100 up_blocks.0:100 up_blocks.1:100
"""

from __future__ import annotations

from typing import Any

from revelio.config import parse
from revelio.release.steering import SteeringMeasureConfig, measure_steering


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return measure_steering(parse(SteeringMeasureConfig, argv, __doc__))


if __name__ == "__main__":
    main()
