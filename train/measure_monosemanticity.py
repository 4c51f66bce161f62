"""Held-out label purity of a release's SAE features against random directions and neurons.

Writes <release>/metrics/monosemanticity.json, shown in the app's Atlas and the release card.

  python train/measure_monosemanticity.py --release releases/fashion-mnist
"""

from __future__ import annotations

from typing import Any

from revelio.config import parse, run_script
from revelio.release.purity_measurement import MonosemanticityConfig, measure_monosemanticity


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return measure_monosemanticity(parse(MonosemanticityConfig, argv, __doc__))


if __name__ == "__main__":
    run_script(main)
