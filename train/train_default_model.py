"""Train the small class-conditional pixel diffusion model that revelio bundles (Fashion-MNIST).

A diffusers UNet2DModel with class embeddings plus one null class (labels are dropped to it 10%
of the time, for classifier-free guidance), epsilon prediction, AdamW with warm-up and cosine
decay, and EMA weights, which are what gets saved. Deterministic given --seed (data order, noise,
label dropout all come from seeded generators). Output: a diffusers pipeline folder (sampled with
DPM-Solver++, which gave clearly better samples than DDIM at this training budget) plus
revelio.json (class names, null class, default guidance), loadable with revelio.load_backbone.

  python train/train_default_model.py --out models/fashion-mnist --steps 20000
"""

from __future__ import annotations

from pathlib import Path

from revelio.config import parse, run_script
from revelio.steps.default_model import DefaultModelConfig, train_default_model


def main(argv: list[str] | None = None) -> Path:
    return train_default_model(parse(DefaultModelConfig, argv, __doc__))


if __name__ == "__main__":
    run_script(main)
