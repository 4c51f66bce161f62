"""Quality gate for a class-conditional or text model: does an independent classifier recognise its samples?

Trains a small CNN on the dataset's REAL training images (or loads the one already at
--classifier), reports its accuracy on the real test images, then generates --per-class samples
of every class with fixed seeds (class c, image i uses seed --seed + 1000 c + i) and reports how
often the classifier labels them as the class they were generated from (chance is 1/classes).
A text model whose revelio.json names a caption template over the dataset's label columns ("a
{colour} {class}") is asked for every prompt of it instead, each label set judged by its own
classifier of real images (revelio.steps.text_quality_gate).

  python train/quality_gate.py --model releases/fashion-mnist/model --out releases/fashion-mnist

Writes <out>/reference_classifier/, <out>/metrics/quality_gate.json and <out>/plots/samples.png.
"""

from __future__ import annotations

from typing import Any

from revelio.config import parse, run_script
from revelio.steps.quality_gate import QualityGateConfig
from revelio.steps.text_quality_gate import run_any_quality_gate


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_any_quality_gate(parse(QualityGateConfig, argv, __doc__))


if __name__ == "__main__":
    run_script(main)
