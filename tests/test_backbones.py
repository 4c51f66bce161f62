"""load_backbone on every supported kind, through the same folder-loading path users take."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import revelio
from revelio.models import DiTBackbone, PixelUNetBackbone, StableDiffusionBackbone
from tests import tiny_models
from tests.conftest import CLASS_NAMES

EXPECTED = {
    "pixel-class": (PixelUNetBackbone, "class", 16, 1),
    "pixel-uncond": (PixelUNetBackbone, "none", 16, 1),
    "sd": (StableDiffusionBackbone, "text", 32, 3),
    "sdxl": (StableDiffusionBackbone, "text", 32, 3),
    "dit": (DiTBackbone, "class", 32, 3),
}


def test_load_backbone_knows_its_kind(backbones, kind):
    bb = backbones[kind]
    cls, conditioning, resolution, channels = EXPECTED[kind]
    assert type(bb) is cls
    assert bb.conditioning == conditioning
    assert bb.resolution == resolution and bb.image_channels == channels
    assert bb.class_names == (CLASS_NAMES if conditioning == "class" else None)
    assert bb.is_xl == (kind == "sdxl") if kind in ("sd", "sdxl") else True


def test_hook_points_and_widths_match_real_block_outputs(backbones, kind):
    bb = backbones[kind]
    assert bb.hook_points, "every backbone exposes block-level hook points"
    images = [np.random.default_rng(i).random((20, 24, 3)) for i in range(2)]
    acts = revelio.extract(bb, images, bb.hook_points, [100], pooling="mean")
    for hook, width in bb.hook_channels.items():
        assert acts[(hook, 100)].shape == (2, width), hook
    if kind == "dit":
        assert all(h.startswith("transformer_blocks.") for h in bb.hook_points)
    else:
        assert "mid_block" in bb.hook_points and "up_blocks.0" in bb.hook_points


def test_images_are_brought_into_model_space(backbones, kind):
    bb = backbones[kind]
    x0 = bb.encode_images([np.zeros((40, 30), dtype=np.uint8)])
    if kind.startswith("pixel"):
        # black -> -1 in pixel space, at the model's resolution and channels
        assert x0.shape == (1, 1, 16, 16) and torch.all(x0 == -1)
    else:
        assert x0.shape == (1, 4, 8, 8)  # VAE latents at 1/4 of the 32 px image


def test_add_noise_is_reproducible_and_follows_the_schedule(backbones):
    bb = backbones["pixel-class"]
    x0 = torch.zeros(2, 1, 16, 16)
    a = bb.add_noise(x0, 500, generator=torch.Generator().manual_seed(3))
    b = bb.add_noise(x0, 500, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    abar = bb.noise_schedule.alphas_cumprod[500]
    assert a.std().item() == pytest.approx((1 - abar).sqrt().item(), rel=0.15)
    with pytest.raises(ValueError, match="outside this scheduler's range 0..999"):
        bb.add_noise(x0, 1000)


def test_generate_is_seeded_per_image(backbones, kind):
    bb = backbones[kind]
    condition = {"class": ["sneaker", "bag"], "text": ["a photo of a cat", "a red car"], "none": None}[
        bb.conditioning
    ]
    count = {"num_images": 2} if condition is None else {}
    kwargs = dict(num_inference_steps=3, output_type="pt", **count)
    pair = bb.generate(condition, seed=7, **kwargs)
    assert pair.shape == (2, bb.image_channels, bb.resolution, bb.resolution)
    assert 0 <= pair.min() and pair.max() <= 1
    second_alone = bb.generate(
        condition[1:] if condition else None, seed=8, **{**kwargs, "num_images": 1}
    )
    torch.testing.assert_close(second_alone[0], pair[1], atol=1e-4, rtol=0)
    images = bb.generate(condition, seed=7, num_inference_steps=3, **count)
    assert len(images) == 2 and images[0].size == (bb.resolution, bb.resolution)


def test_class_conditions_are_validated(backbones):
    bb = backbones["pixel-class"]
    with pytest.raises(ValueError, match="unknown class 'hat'"):
        bb.generate("hat", num_inference_steps=2)
    with pytest.raises(ValueError, match="out of range 0..2"):
        bb.generate(7, num_inference_steps=2)


def test_unknown_sources_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="has no model_index.json"):
        revelio.load_backbone(tmp_path)
    with pytest.raises(ValueError, match="neither a local folder nor a Hub repo id"):
        revelio.load_backbone("not a valid/repo id!!")
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "AudioLDMPipeline", "unet": ["diffusers", "UNet2DConditionModel"]})
    )
    with pytest.raises(ValueError, match="revelio supports"):
        revelio.load_backbone(tmp_path)


def test_an_sdxl_turbo_pipeline_samples_in_one_step_without_guidance_and_steers(tmp_path):
    """SDXL-Turbo's Hub folder has no revelio.json: its 1 step at guidance 0 are known by name."""
    from diffusers import EulerAncestralDiscreteScheduler

    from revelio.activations.capture import extract
    from revelio.sae import KSparseAutoencoder
    from revelio.steering import FeatureEdit, steer

    folder = tiny_models.build_sdxl(tmp_path / "stabilityai" / "sdxl-turbo")
    backbone = revelio.load_backbone(folder, device="cpu")
    backbone.pipeline.scheduler = EulerAncestralDiscreteScheduler.from_config(backbone.pipeline.scheduler.config,
                                                                              timestep_spacing="trailing")
    assert (backbone.default_num_inference_steps, backbone.default_guidance_scale) == (1, 0.0)
    plain = backbone.generate("a photo of a cloud", seed=0, output_type="pt")
    hook = backbone.hook_points[-1]
    tokens = extract(backbone, [plain[0].permute(1, 2, 0).mul(255).byte().numpy()], [hook], [999], pooling="none")[(hook, 999)]
    sae = KSparseAutoencoder(d_in=tokens.shape[-1], d_sae=2 * tokens.shape[-1], k=4)
    with steer(backbone, [FeatureEdit(sae, clamp={0: 50.0}, hook=hook)]):
        steered = backbone.generate("a photo of a cloud", seed=0, output_type="pt")
    assert plain.shape == steered.shape and not torch.allclose(plain, steered), "a one-step sample is steered"
