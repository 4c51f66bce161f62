"""Train the small latent text-to-image model (colour Fashion-MNIST, "a red sneaker") from scratch.

A VAE first (32 px RGB to 8x8x4 latents), then a UNet with cross-attention and a CLIP text encoder
with its own whole-word tokenizer, trained jointly with caption dropout for classifier-free
guidance and EMA weights. Deterministic given --seed and resumable: rerun the same command after
a crash or kill -9 and it continues to the same weights. Output: a StableDiffusionPipeline folder
plus revelio.json, loadable with StableDiffusionPipeline.from_pretrained and revelio.load_backbone.

  python train/train_text_model.py --out models/fashion-mnist-text --threads 1
"""

from __future__ import annotations

from pathlib import Path

from revelio.config import parse, run_script
from revelio.steps.text_model import TextModelConfig, train_text_model


def main(argv: list[str] | None = None) -> Path:
    return train_text_model(parse(TextModelConfig, argv, __doc__))


if __name__ == "__main__":
    run_script(main)
