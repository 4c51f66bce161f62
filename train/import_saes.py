"""Install published SAEs into an SAE grid folder, each at its own hook point and every timestep.

  python train/import_saes.py --saes bcywinski/SAeUron:unet.up_blocks.1.attentions.1 \
      --cache cache/train --out saes/ --timesteps 100 300

Each SAE (any format KSparseAutoencoder.from_pretrained reads) gets feature statistics on the
cache's images, as a trained one does; train/build_release.py --saes runs this instead of
training SAEs.
"""

from __future__ import annotations

from revelio.config import parse, run_script
from revelio.steps.imported_saes import ImportedSAEsConfig, install_saes


def main(argv: list[str] | None = None) -> None:
    install_saes(parse(ImportedSAEsConfig, argv, __doc__))


if __name__ == "__main__":
    run_script(main)
