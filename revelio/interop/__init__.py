"""SAE formats of other projects, in and out: data in, data out, never code.

===============  ===================================  ==================================  =========================
format           files                                in                                  out
===============  ===================================  ==================================  =========================
revelio          config.json + model.safetensors      ``from_pretrained``                 ``save_pretrained``
sparsify         cfg.json + sae.safetensors           ``from_pretrained`` (also SAeUron,  ``format="sparsify"``
                                                      SAEmnesia)
SAELens (TopK)   cfg.json + sae_weights.safetensors   ``from_pretrained``                 ``format="saelens"``
SDXL-unbox       config.json + state_dict.pth (pickle)  ``train/convert_saes.py``         --
paper (SD-kSAE)  one .pt (pickle)                     ``train/convert_saes.py``           --
===============  ===================================  ==================================  =========================

This package sits below :mod:`revelio.sae`: it turns files into an :class:`SAEConfig` and tensors
in revelio's names and orientation (and back), and never builds a model, so
``KSparseAutoencoder`` calls it without an import cycle.
"""

from revelio.interop.detect import read_foreign_sae, write_foreign_sae
from revelio.interop.files import ForeignSAE

__all__ = ["ForeignSAE", "read_foreign_sae", "write_foreign_sae"]
