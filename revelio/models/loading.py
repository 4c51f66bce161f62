"""``load_backbone``: a diffusers pipeline (Hub repo id or local folder) as the right Backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline

from revelio.bundled import bundled_model_dir, is_bundled
from revelio.models.backbone import Backbone
from revelio.models.dit import DiTBackbone
from revelio.models.flux import FluxBackbone
from revelio.models.pixart import PixArtBackbone
from revelio.models.pixel_unet import PixelUNetBackbone
from revelio.models.sd3 import SD3Backbone
from revelio.models.stable_diffusion import StableDiffusionBackbone
from revelio.storage.files import ArtifactFormatError, read_json
from revelio.storage.resolve import hub_unreachable, resolve_file

# Optional file beside model_index.json with what diffusers has no place for: class names and
# the null class id, a caption template and its label sets, default guidance and steps (and for
# text transformers the resolution and T5 prompt length).
EXTRAS_FILE = "revelio.json"


def _read_json(name_or_path: str, filename: str, required: bool, revision: str | None = None) -> dict[str, Any]:
    try:
        path = resolve_file(name_or_path, filename, revision=revision, required=required)
    except ArtifactFormatError as err:
        raise ValueError(
            f"{name_or_path!r} has no {filename}: point load_backbone at a diffusers pipeline folder (one written by "
            f"DiffusionPipeline.save_pretrained) or a repo id such as 'stable-diffusion-v1-5/stable-diffusion-v1-5' ({err})"
        ) from None
    return {} if path is None else read_json(path)


def _backbone_class(model_index: dict[str, Any], name_or_path: str) -> type[Backbone]:
    components = {k: v[1] for k, v in model_index.items() if isinstance(v, list) and len(v) == 2}
    unet, transformer = components.get("unet"), components.get("transformer")
    if unet == "UNet2DModel":
        return PixelUNetBackbone
    if unet == "UNet2DConditionModel" and "text_encoder" in components:
        return StableDiffusionBackbone
    if transformer == "FluxTransformer2DModel":
        return FluxBackbone
    if transformer == "SD3Transformer2DModel":
        return SD3Backbone
    if transformer == "PixArtTransformer2DModel" and model_index.get("_class_name") == "PixArtSigmaPipeline":
        return PixArtBackbone
    if transformer in ("DiTTransformer2DModel", "Transformer2DModel") and "vae" in components and "text_encoder" not in components:
        return DiTBackbone
    raise ValueError(
        f"{name_or_path!r} is a {model_index.get('_class_name')} with components {components}; "
        "revelio supports pixel UNet2DModel pipelines, Stable Diffusion 1.x/2.x, SDXL, DiT, FLUX.1, "
        "Stable Diffusion 3 and PixArt-Sigma"
    )


def load_backbone(
    name_or_path: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
    revision: str | None = None,
) -> Backbone:
    """Load a diffusers pipeline and wrap it for activation capture, steering and generation.

    ``name_or_path`` is a Hub repo id (at ``revision``), a local pipeline folder, or "bundled".

    ``device`` defaults to CUDA when available; ``dtype`` to float16 on CUDA (bfloat16 for FLUX,
    whose activations overflow float16), float32 on CPU.
    """
    name = str(name_or_path)
    if is_bundled(name):  # a model committed with a bundled release
        name = str(bundled_model_dir(name))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cls = _backbone_class(_read_json(name, "model_index.json", required=True, revision=revision), name)
    dtype = dtype or (cls.cuda_dtype if device.type == "cuda" else torch.float32)
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True, "revision": revision,  # never fall back to pickled .bin
                              "local_files_only": not Path(name).is_dir() and hub_unreachable() is not None}
    if cls is StableDiffusionBackbone:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipeline = DiffusionPipeline.from_pretrained(name, **kwargs).to(device)
    if cls is not DiTBackbone:
        return cls(pipeline, name, _read_json(name, EXTRAS_FILE, required=False, revision=revision))
    return cls(pipeline, name)
