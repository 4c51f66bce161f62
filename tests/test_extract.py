"""extract: one forward per timestep for all hooks, early exit, reproducible noise, poolings."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

import revelio
from revelio.activations.hooks import (
    capture_outputs,
    replace_outputs,
)
from revelio.data.images import ImageError
from tests.leaks import count_forward_hooks


def _images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random((24, 24, 3)) * 255).astype(np.uint8) for _ in range(count)]


def _deepest_two(bb) -> list[str]:
    """A shallow and a deep hook point that still leaves later blocks to skip."""
    return [bb.hook_points[0], bb.hook_points[-2]]


def test_early_exit_equals_a_full_forward(backbones, kind):
    bb = backbones[kind]
    hooks, t = _deepest_two(bb), 300
    images = _images(3)
    early = revelio.extract(bb, images, hooks, [t], pooling="none", seed=5)
    x0 = bb.encode_images(images)
    x_t = bb.add_noise(x0, t, noise=bb.noise_like(x0, 5))
    with torch.no_grad(), capture_outputs(bb.denoiser, hooks) as full:
        bb.denoise(x_t, t)  # runs to the end: nothing stops it
    for hook in hooks:
        reference = revelio.activations.capture.pool(full[hook], "none")
        torch.testing.assert_close(early[(hook, t)], reference, atol=1e-5, rtol=1e-5)


def test_forward_stops_after_the_deepest_hook(backbones, kind):
    bb = backbones[kind]
    last = bb.denoiser.get_submodule(bb.hook_points[-1])
    calls = []
    handle = last.register_forward_hook(lambda *args: calls.append(1))
    try:
        revelio.extract(bb, _images(2), _deepest_two(bb), [10, 900])
    finally:
        handle.remove()
    assert calls == [], "blocks after the deepest requested hook must not run"


def test_same_image_seed_and_t_give_the_same_activations_in_any_batch(backbones, kind):
    bb = backbones[kind]
    images = _images(5)
    hooks, timesteps = _deepest_two(bb), [50, 600]
    together = revelio.extract(bb, images, hooks, timesteps, batch_size=5)
    one_by_one = revelio.extract(bb, images, hooks, timesteps, batch_size=1)
    in_other_company = revelio.extract(bb, _images(3, seed=9) + images[2:3], hooks, timesteps, batch_size=2)
    again = revelio.extract(bb, images, hooks, timesteps, batch_size=5)
    for key in together:
        torch.testing.assert_close(together[key], one_by_one[key], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(together[key][2], in_other_company[key][3], atol=1e-5, rtol=1e-4)
        assert torch.equal(together[key], again[key])


def test_seed_changes_the_noise(backbones):
    bb = backbones["pixel-class"]
    images = _images(2)
    a = revelio.extract(bb, images, ["mid_block"], [700], seed=0)
    b = revelio.extract(bb, images, ["mid_block"], [700], seed=1)
    per_image = revelio.extract(bb, images, ["mid_block"], [700], seed=[1, 0])
    assert not torch.allclose(a[("mid_block", 700)], b[("mid_block", 700)])
    torch.testing.assert_close(per_image[("mid_block", 700)][0], b[("mid_block", 700)][0])
    torch.testing.assert_close(per_image[("mid_block", 700)][1], a[("mid_block", 700)][1])


def test_mean_pooling_is_the_mean_of_the_spatial_tokens(backbones, kind):
    bb = backbones[kind]
    hooks = _deepest_two(bb)
    spatial = revelio.extract(bb, _images(3), hooks, [200], pooling="none")
    pooled = revelio.extract(bb, _images(3), hooks, [200], pooling="mean")
    for key, tokens in spatial.items():
        assert tokens.ndim == 3 and tokens.shape[-1] == bb.hook_channels[key[0]]
        torch.testing.assert_close(pooled[key], tokens.mean(dim=1), atol=1e-5, rtol=1e-5)


def test_accepts_pil_tensors_paths_and_datasets(backbones, tmp_path):
    bb = backbones["pixel-class"]
    arrays = _images(4)
    pil = [Image.fromarray(a) for a in arrays]
    tensors = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # [N, C, H, W] uint8
    paths = []
    for i, image in enumerate(pil):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    dataset = datasets.Dataset.from_dict({"picture": pil, "label": [0, 1, 2, 1]}).cast_column(
        "picture", datasets.Image()
    )
    results = [
        revelio.extract(bb, source, ["mid_block"], [100], batch_size=3)[("mid_block", 100)]
        for source in (arrays, pil, tensors, paths, dataset)
    ]
    for other in results[1:]:
        torch.testing.assert_close(other, results[0])
    conditioned = revelio.extract(bb, dataset, ["mid_block"], [100], condition=dataset["label"])
    assert not torch.allclose(conditioned[("mid_block", 100)], results[0])


def test_no_hooks_remain_after_an_error_mid_run(backbones, tmp_path):
    bb = backbones["pixel-class"]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    images = _images(3) + [broken]
    with pytest.raises(ImageError, match="could not read .*broken.png"):
        revelio.extract(bb, images, ["mid_block", "up_blocks.0"], [10], batch_size=3)
    assert count_forward_hooks(bb.pipeline.unet) == 0


def test_bad_arguments_are_named(backbones):
    bb = backbones["sd"]
    with pytest.raises(ValueError, match="no hook point 'up_blocks.9'.*mid_block"):
        revelio.extract(bb, _images(1), ["up_blocks.9"], [10])
    with pytest.raises(ValueError, match="timestep 1000 is outside this scheduler's range 0..999"):
        revelio.extract(bb, _images(1), ["mid_block"], [1000])
    with pytest.raises(ValueError, match="timestep -1 is outside"):
        revelio.extract(bb, _images(1), ["mid_block"], [-1])
    with pytest.raises(ValueError, match="pooling must be 'mean' or 'none'"):
        revelio.extract(bb, _images(1), ["mid_block"], [10], pooling="max")
    with pytest.raises(ValueError, match="got 2 conditions for 1 images"):
        revelio.extract(bb, _images(1), ["mid_block"], [10], condition=["a", "b"])
    assert count_forward_hooks(bb.pipeline.unet) == 0


def test_no_hooks_remain_when_the_forward_itself_raises(backbones):
    bb = backbones["pixel-class"]

    def explode(hidden):
        raise RuntimeError("boom inside the forward")

    with pytest.raises(RuntimeError, match="boom inside the forward"):
        with replace_outputs(bb.unet, {"down_blocks.0": explode}):
            revelio.extract(bb, _images(2), ["mid_block", "up_blocks.0"], [10])
    assert count_forward_hooks(bb.unet) == 0


def test_numpy_labels_and_autograd_after_extraction(backbones):
    bb = backbones["pixel-class"]
    labels = np.array([0, 1, 2, 1])
    acts = revelio.extract(bb, _images(4), ["mid_block"], [10], condition=labels)[("mid_block", 10)]
    weight = torch.ones(acts.shape[1], requires_grad=True)
    (acts @ weight).sum().backward()  # extracted tensors are ordinary tensors, usable for training
    assert torch.is_grad_enabled() and weight.grad is not None
