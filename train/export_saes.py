"""Export every SAE of a release (or SAE grid folder) in another library's format.

  python train/export_saes.py RELEASE OUT --format sparsify|saelens [--revision REV]

RELEASE is a local folder or a Hub repo id. Each SAE saes/<cell>/ is written to OUT/<cell>/ as
cfg.json + sae.safetensors (eai-sparsify: SparseCoder.load_from_disk(OUT/<cell>)) or cfg.json +
sae_weights.safetensors (sae-lens: SAE.load_from_disk(OUT/<cell>)). revelio's input scale is
folded into the weights (the same SAE, codes equal up to float rounding); feature statistics,
labels and the rest of the release stay behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from revelio.config import option, parse, run_script
from revelio.errors import ArtifactFormatError
from revelio.layout import sae_cells, sae_subfolder
from revelio.sae.model import KSparseAutoencoder
from revelio.storage.resolve import resolve_folder


@dataclass
class ExportConfig:
    release: str = option(help="a release or SAE grid folder, or a Hub repo id", positional=True)
    out: Path = option(help="the folder the exported SAEs are written into", positional=True)
    format: Literal["sparsify", "saelens"] = option(help="the library whose loader reads the result")
    revision: str | None = option(None, help="the Hub revision of RELEASE")


def main(argv: list[str] | None = None) -> list[Path]:
    """Export each SAE of the release; returns the folders written."""
    config = parse(ExportConfig, argv, __doc__)
    root = resolve_folder(config.release, config.revision, what="release folder")
    cells = sae_cells(root)
    if not cells:
        raise ArtifactFormatError(f"{root} holds no SAEs (saes/<hook>/t<timestep>/<pooling>/config.json)")
    written = []
    for cell in cells:
        sae = KSparseAutoencoder.from_pretrained(root, subfolder=sae_subfolder(cell))
        written.append(sae.save_pretrained(config.out / cell.path, format=config.format))
        logging.info("%s -> %s", sae_subfolder(cell), written[-1])
    return written


if __name__ == "__main__":
    run_script(main)
