"""Hook points beyond block outputs: any module path, foreign prefixes, and residual updates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import revelio
from revelio.activations.hooks import capture_outputs, replace_outputs
from revelio.hook_points import HookPoint
from revelio.steering import FeatureEdit, steer

ATTENTION = "up_blocks.1.attentions.1"  # a cross-attention block of the tiny SD UNet (where SAeUron's SAEs read)


def test_a_hook_point_is_a_module_path_and_what_is_read_there():
    hook = HookPoint.parse("unet.up_blocks.1.attentions.1@residual")
    assert (hook.module, hook.read, hook.spec) == (ATTENTION, "residual", f"{ATTENTION}@residual")
    assert HookPoint.parse("transformer.transformer_blocks.18").spec == "transformer_blocks.18"
    assert HookPoint.parse("mid_block").read == "output"
    with pytest.raises(ValueError, match="reads one of"):
        HookPoint.parse("mid_block@input")
    with pytest.raises(ValueError, match="module path"):
        HookPoint.parse("@residual")


def _images(n: int = 2) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def _block_input_and_output(backbone, module: str, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    seen = {}

    def record(_module, args, kwargs, output):
        seen["in"], seen["out"] = args[0] if args else kwargs["hidden_states"], output[0]

    handle = backbone.denoiser.get_submodule(module).register_forward_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            backbone.denoise(x, t, "a photo")
    finally:
        handle.remove()
    return seen["in"], seen["out"]


def test_the_residual_update_is_the_blocks_output_minus_its_input(backbones):
    backbone = backbones["sd"]
    acts = revelio.extract(backbone, _images(), [f"unet.{ATTENTION}@residual", ATTENTION], [300], pooling="none",
                           condition="a photo", progress=False)
    assert set(acts) == {(f"{ATTENTION}@residual", 300), (ATTENTION, 300)}, "hook points come back in their canonical spelling"
    x0 = backbone.encode_images(_images())
    x_t = backbone.add_noise(x0, 300, noise=backbone.noise_like(x0, 0))
    before, after = _block_input_and_output(backbone, ATTENTION, x_t, 300)
    update = revelio.activations.capture.pool(after - before, "none")
    torch.testing.assert_close(acts[(f"{ATTENTION}@residual", 300)], update.float())
    torch.testing.assert_close(acts[(ATTENTION, 300)], revelio.activations.capture.pool(after, "none").float())


def test_rewriting_a_residual_update_moves_the_output_by_as_much(backbones):
    backbone = backbones["sd"]
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    before, after = _block_input_and_output(backbone, ATTENTION, x, 500)
    with replace_outputs(backbone.denoiser, {f"{ATTENTION}@residual": lambda update: 3 * update}), \
            capture_outputs(backbone.denoiser, [ATTENTION]) as seen, torch.no_grad():
        backbone.denoise(x, 500, "a photo")
    torch.testing.assert_close(seen[ATTENTION], before + 3 * (after - before), rtol=1e-5, atol=1e-5)


def test_a_module_that_changes_shape_has_no_residual_update(backbones):
    with pytest.raises(ValueError, match="has no residual update"):
        revelio.extract(backbones["sd"], _images(1), ["up_blocks.0@residual"], [300], progress=False)
    with pytest.raises(ValueError, match="no module 'up_blocks.9'"):
        revelio.extract(backbones["sd"], _images(1), ["up_blocks.9@residual"], [300], progress=False)


def test_an_sae_at_a_residual_update_steers_generation(backbones):
    backbone = backbones["sd"]
    channels = backbone.denoiser.get_submodule(ATTENTION).proj_out.out_channels
    torch.manual_seed(0)
    sae = revelio.KSparseAutoencoder(channels, 4 * channels, 4, hook=f"unet.{ATTENTION}@residual", timestep=500)
    edit = FeatureEdit(sae, clamp={0: 20.0, 1: 20.0})
    assert edit.hook == f"{ATTENTION}@residual"
    kwargs = {"seed": 3, "num_inference_steps": 3, "output_type": "pt"}
    plain = backbone.generate("a photo", **kwargs)
    with steer(backbone, [edit]):
        steered = backbone.generate("a photo", **kwargs)
    assert (steered - plain).abs().max() > 1e-3, "clamping features of the update changes the image"
    again = backbone.generate("a photo", **kwargs)
    torch.testing.assert_close(again, plain), "the hooks are gone after the block"


def test_steering_a_unit_norm_sae_moves_the_input_by_its_decoded_change(backbones):
    """An SAE that standardises each input row (SAeUron's input_unit_norm): clamping a feature moves the
    block output by exactly what decoding the changed code adds, in input units (times the row's std)."""
    backbone = backbones["sd"]
    channels = backbone.denoiser.get_submodule(ATTENTION).proj_out.out_channels
    torch.manual_seed(1)
    sae = revelio.KSparseAutoencoder(channels, 4 * channels, 4, hook=ATTENTION, input_normalization="unit_norm")
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    _, before = _block_input_and_output(backbone, ATTENTION, x, 500)
    tokens = revelio.activations.capture.pool(before, "none")[0]
    code = sae.encode(tokens)
    feature = int(code.indices[0, 0])
    with steer(backbone, [FeatureEdit(sae, clamp={feature: 50.0})]), capture_outputs(backbone.denoiser, [ATTENTION]) as seen, \
            torch.no_grad():
        backbone.denoise(x, 500, "a photo")
    old = code.to_dense(sae.d_sae)[:, feature:feature + 1]
    expected = tokens + (50.0 - old) * sae.W_dec[feature] * code.std
    torch.testing.assert_close(revelio.activations.capture.pool(seen[ATTENTION], "none")[0][0], expected[0], rtol=1e-4, atol=1e-4)
