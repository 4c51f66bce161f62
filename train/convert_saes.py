"""Convert pickled SAEs into revelio's format, once: SDXL-unbox block folders and the paper's .pt files.

  python train/convert_saes.py SOURCE OUT [--revision REV] [--license LICENSE]

SOURCE is a local folder or .pt file, or a Hub repo id (downloaded whole, e.g. surokpro2/sdxl-saes).
Every SDXL-unbox block under it (config.json + state_dict.pth, with mean.pt/std.pt kept as each
feature's typical activation) or else every .pt file is read with torch.load(weights_only=True),
which builds tensors and nothing else, and written to OUT/<its path in SOURCE> as config.json +
model.safetensors. Load the results with KSparseAutoencoder.from_pretrained(OUT, subfolder=...);
KSparseAutoencoder.from_pretrained itself never opens a pickle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from revelio.config import option, parse, run_script
from revelio.interop.convert import pickled_saes
from revelio.sae.model import KSparseAutoencoder


@dataclass
class ConvertConfig:
    source: str = option(help="a local folder or .pt file, or a Hub repo id", positional=True)
    out: Path = option(help="the folder the converted SAEs are written into", positional=True)
    revision: str | None = option(None, help="the Hub revision of SOURCE")
    license: str = option("", help="the SAEs' licence, recorded in each config (pickles do not say)")


def main(argv: list[str] | None = None) -> list[Path]:
    """Convert every pickled SAE in SOURCE; returns the folders written."""
    config = parse(ConvertConfig, argv, __doc__)
    written = []
    for relative, foreign in pickled_saes(config.source, config.revision, config.license):
        folder = KSparseAutoencoder.from_foreign(foreign).save_pretrained(config.out / relative)
        logging.info("%s -> %s (%s, hook %s)", relative or config.source, folder, foreign.config.source.format, foreign.config.hook)
        written.append(folder)
    return written


if __name__ == "__main__":
    run_script(main)
