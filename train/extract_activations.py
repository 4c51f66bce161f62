"""Extract activations of a backbone over a dataset into an on-disk cache, for SAEs and probes.

One pass over the data serves every (hook, timestep) and both poolings: spatial tokens are
captured once and their mean is the pooled vector.

  python train/extract_activations.py --backbone PATH_OR_ID --dataset DATASET \
      --hooks mid_block up_blocks.0 --timesteps 25 250 --poolings mean none --out cache/
"""

from __future__ import annotations

from revelio.config import parse, run_script
from revelio.steps.extract import extract_to_cache
from revelio.steps.extraction_config import ExtractionConfig


def main(argv: list[str] | None = None) -> dict:
    return extract_to_cache(parse(ExtractionConfig, argv, __doc__))


if __name__ == "__main__":
    run_script(main)
