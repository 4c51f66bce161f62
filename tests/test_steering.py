"""revelio.steer: edits only the chosen features, keeps the SAE error, and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import revelio
from revelio.activations.hooks import capture_outputs
from revelio.sae import KSparseAutoencoder
from revelio.steering import FeatureEdit, SteeringWarning, steer
from tests.leaks import count_forward_hooks

ROOT = Path(__file__).resolve().parents[1]
HOOK = "mid_block"


def make_sae(backbone, pooling: str, hook: str = HOOK, timestep: int = 500, seed: int = 0) -> KSparseAutoencoder:
    torch.manual_seed(seed)
    sae = KSparseAutoencoder(backbone.hook_channels[hook], 48, 4, hook=hook, timestep=timestep, pooling=pooling)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
    return sae


def dense_edit(sae: KSparseAutoencoder, tokens: torch.Tensor, clamp: dict, add: dict) -> torch.Tensor:
    """The definition: x + decode(new dense codes) - decode(old dense codes)."""
    with torch.no_grad():
        old = sae.encode(tokens, dense=True)
        new = old.clone()
        for f, value in clamp.items():
            new[..., f] = value
        for f, amount in add.items():
            new[..., f] += amount
        return tokens + sae.decode(new) - sae.decode(old)


@pytest.mark.parametrize("pooling", ["mean", "none"])
def test_edit_equals_the_dense_definition_and_keeps_the_sae_error(backbones, pooling):
    bb = backbones["pixel-class"]
    sae = make_sae(bb, pooling)
    maps = torch.randn(3, sae.d_in, 4, 4)
    tokens = maps.flatten(2).transpose(1, 2)
    code = sae.encode(tokens.mean(1) if pooling == "mean" else tokens)
    firing = int(code.indices.flatten()[0])
    other, shifted = (firing + 10) % sae.d_sae, (firing + 20) % sae.d_sae
    clamp, add = {firing: 3.0, other: 1.5}, {shifted: -0.5}
    edit = FeatureEdit(sae, clamp=clamp, add=add)
    got = edit.apply(maps, None).flatten(2).transpose(1, 2)
    if pooling == "mean":
        pooled = tokens.mean(1, keepdim=True)
        expected = tokens + (dense_edit(sae, pooled, clamp, add) - pooled)
    else:
        expected = dense_edit(sae, tokens, clamp, add)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - tokens).abs().max() > 0.1, "the edit moves the activation"
    if pooling == "none":  # what the SAE does not reconstruct stays: x - decode(codes) is unchanged
        with torch.no_grad():
            new = sae.encode(tokens, dense=True)
            new[..., firing], new[..., other], new[..., shifted] = 3.0, 1.5, new[..., shifted] - 0.5
            torch.testing.assert_close(got - sae.decode(new), tokens - sae(tokens), atol=1e-5, rtol=1e-5)


def test_clamping_features_to_their_own_value_changes_nothing(backbones):
    bb = backbones["pixel-class"]
    sae = make_sae(bb, "mean")
    args = dict(seed=3, num_inference_steps=1, guidance_scale=1.0, output_type="pt")
    with capture_outputs(bb.denoiser, [HOOK]) as captured:
        plain = bb.generate(1, **args)
    pooled = captured[HOOK].flatten(2).mean(-1)
    with torch.no_grad():
        code = sae.encode(pooled)
    own = {int(f): float(v) for f, v in zip(code.indices[0], code.values[0]) if v > 0}
    assert own, "some features fire"
    with steer(bb, sae, clamp=own):
        steered = bb.generate(1, **args)
    assert (steered - plain).abs().max() < 1e-4


def test_ablating_a_feature_that_never_fires_changes_nothing(backbones):
    bb = backbones["pixel-class"]
    sae = make_sae(bb, "none")
    with torch.no_grad():
        sae.b_enc[5] = -1e4
    args = dict(seed=1, num_images=2, num_inference_steps=4, output_type="pt")
    plain = bb.generate([0, 2], **args)
    with steer(bb, sae, clamp={5: 0.0}):
        ablated = bb.generate([0, 2], **args)
    assert torch.equal(ablated, plain)


def test_steering_changes_images_only_inside_its_window_and_mask(backbones):
    bb = backbones["pixel-class"]
    sae = make_sae(bb, "none")
    args = dict(seed=2, num_images=3, num_inference_steps=5, guidance_scale=2.0, output_type="pt")
    plain = bb.generate([0, 1, 2], **args)
    with steer(bb, sae, clamp={3: 50.0}):
        steered = bb.generate([0, 1, 2], **args)
    assert steered.shape == plain.shape and (steered - plain).abs().max() > 1e-2, "a strong clamp moves the images"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SteeringWarning)
        with steer(bb, sae, clamp={3: 50.0}, timesteps=(5, 0)):  # DDIM with 5 steps never goes below t=1
            early_only = bb.generate([0, 1, 2], **args)
    assert not torch.equal(early_only, plain) and not torch.equal(early_only, steered)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SteeringWarning)
        with steer(bb, sae, clamp={3: 50.0}, timesteps=(999, 999)):  # no sampling step lands on t=999
            outside = bb.generate([0, 1, 2], **args)
    assert torch.equal(outside, plain)
    with steer(bb, sae, clamp={3: 50.0}, mask=torch.zeros(16, 16)):
        masked_out = bb.generate([0, 1, 2], **args)
    assert torch.equal(masked_out, plain)
    with steer(bb, sae, clamp={3: 50.0}, mask=torch.ones(3, 16, 16)):  # one mask per image, doubled by CFG
        masked_in = bb.generate([0, 1, 2], **args)
    torch.testing.assert_close(masked_in, steered)


def test_several_saes_and_hooks_at_once(backbones):
    bb = backbones["pixel-class"]
    mid, up = make_sae(bb, "mean"), make_sae(bb, "none", hook="up_blocks.1")
    args = dict(seed=4, num_inference_steps=3, output_type="pt")
    with steer(bb, mid, add={1: 20.0}):
        one = bb.generate(0, **args)
    with steer(bb, [FeatureEdit(mid, add={1: 20.0}), FeatureEdit(up, clamp={2: 30.0})]) as edits:
        assert [e.hook for e in edits] == [HOOK, "up_blocks.1"]
        both = bb.generate(0, **args)
    assert not torch.equal(one, both)
    assert count_forward_hooks(bb.denoiser) == 0


def test_dit_token_outputs_are_steered(backbones):
    bb = backbones["dit"]
    hook = bb.hook_points[len(bb.hook_points) // 2]
    sae = make_sae(bb, "none", hook=hook)
    args = dict(seed=0, num_inference_steps=2, output_type="pt")
    plain = bb.generate(0, **args)
    with steer(bb, sae, clamp={0: 40.0}):
        steered = bb.generate(0, **args)
    assert (steered - plain).abs().max() > 1e-3


def test_no_hook_survives_the_context_even_after_an_exception(backbones, tmp_path):
    bb = backbones["pixel-class"]
    sae = make_sae(bb, "none")
    with pytest.raises(RuntimeError, match="boom"):
        with steer(bb, sae, clamp={3: 50.0}):
            bb.generate(0, seed=0, num_inference_steps=2)
            raise RuntimeError("boom")
    assert count_forward_hooks(bb.denoiser) == 0
    after = bb.generate(1, seed=11, num_inference_steps=3, output_type="pt")
    script = (
        "import sys, torch, revelio; from safetensors.torch import save_file\n"
        "bb = revelio.load_backbone(sys.argv[1], device='cpu')\n"
        "save_file({'x': bb.generate(1, seed=11, num_inference_steps=3, output_type='pt')}, sys.argv[2])\n"
    )
    out = tmp_path / "fresh.safetensors"
    subprocess.run([sys.executable, "-c", script, bb.name_or_path, str(out)], cwd=ROOT, check=True, timeout=300)
    fresh = revelio.storage.files.read_safetensors(out)["x"]
    assert torch.equal(after, fresh), "the next generation equals one from a fresh process"


def test_bad_edits_get_clear_errors_and_mismatches_warn(backbones):
    bb = backbones["pixel-class"]
    sae = make_sae(bb, "mean")
    with pytest.raises(ValueError, match=r"out of range: this SAE has features 0\.\.47"):
        steer(bb, sae, clamp={48: 1.0}).__enter__()
    with pytest.raises(ValueError, match="nothing to steer"):
        steer(bb, sae).__enter__()
    with pytest.raises(ValueError, match="reads 16 channels but down_blocks.0 outputs 8"):
        steer(bb, sae, hook="down_blocks.0", clamp={1: 1.0}).__enter__()
    with pytest.raises(ValueError, match="no hook point 'nowhere'"):
        steer(bb, sae, hook="nowhere", clamp={1: 1.0}).__enter__()
    other = make_sae(bb, "mean", hook="down_blocks.2")
    with pytest.warns(SteeringWarning, match="trained on down_blocks.2, not mid_block"):
        with steer(bb, other, hook=HOOK, clamp={1: 1.0}):
            pass
    with pytest.warns(SteeringWarning, match="trained at t=500, outside the steering window"):
        with steer(bb, sae, clamp={1: 1.0}, timesteps=(300, 100)):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", SteeringWarning)
        with steer(bb, sae, clamp={1: 1.0}, timesteps=(300, 100)):
            pass
    assert count_forward_hooks(bb.denoiser) == 0


def test_clamping_to_a_map_sets_each_location(backbones):
    bb = backbones["pixel-class"]
    sae = make_sae(bb, "none")
    maps = torch.randn(2, sae.d_in, 4, 4)
    tokens = maps.flatten(2).transpose(1, 2)
    feature = int(sae.encode(tokens).indices.flatten()[0])
    value_map = torch.arange(16.0).reshape(4, 4) / 4  # already at the block's grid: no resampling
    got = FeatureEdit(sae, clamp={feature: value_map}).apply(maps, None).flatten(2).transpose(1, 2)
    with torch.no_grad():
        old = sae.encode(tokens, dense=True)
        new = old.clone()
        new[..., feature] = value_map.flatten()
        expected = tokens + sae.decode(new) - sae.decode(old)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # a constant map is the same as clamping to that number; a map at another resolution is resized
    constant = FeatureEdit(sae, clamp={feature: torch.full((8, 8), 2.0)}).apply(maps, None)
    torch.testing.assert_close(constant, FeatureEdit(sae, clamp={feature: 2.0}).apply(maps, None), atol=1e-5, rtol=1e-5)


def test_map_clamps_need_a_spatial_sae_and_a_2d_map(backbones):
    bb = backbones["pixel-class"]
    with pytest.raises(ValueError, match="spatial SAE"):
        FeatureEdit(make_sae(bb, "mean"), clamp={1: torch.ones(4, 4)})
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        FeatureEdit(make_sae(bb, "none"), clamp={1: torch.ones(2, 4, 4)})


def test_class_code_maps_average_codes_per_class_and_location(backbones):
    from revelio.steering.selection import ClassCodeMaps

    bb = backbones["pixel-class"]
    sae = make_sae(bb, "none")
    tokens = torch.randn(6, 9, sae.d_in)
    labels = [0, 0, 1, 1, 1, 2]
    maps = ClassCodeMaps.from_tokens(sae, tokens, labels, n_classes=3)
    with torch.no_grad():
        dense = sae.encode(tokens, dense=True)
    torch.testing.assert_close(maps.maps[1].reshape(9, -1), dense[2:5].mean(0))
    torch.testing.assert_close(maps.overall.reshape(9, -1), dense.mean(0))
    chosen = maps.selective(2, 3)
    excess = (dense[5] - dense.mean(0)).clamp_min(0).sum(0)
    assert chosen == excess.argsort(descending=True)[:3].tolist()
    assert maps.map(2, chosen[0]).shape == (3, 3)
    with pytest.raises(ValueError, match="out of range"):
        maps.selective(3, 1)
    with pytest.raises(ValueError, match="square"):
        ClassCodeMaps.from_tokens(sae, torch.randn(2, 8, sae.d_in), [0, 1], 2)


def test_unrelated_features_are_the_heaviest_live_ones_no_class_uses():
    from types import SimpleNamespace

    from revelio.steering.selection import unrelated_features

    stats = SimpleNamespace(image_frequency=torch.tensor([0.5, 0.5, 0.0001, 0.5, 0.5, 0.5]),
                            overall_mean_activation=torch.tensor([3.0, 5.0, 9.0, 1.0, 0.0, 2.0]))
    # feature 1 is the heaviest but steers a class; 2 is too rare; 4 never fires
    assert unrelated_features(stats, 3, min_frequency=0.01, exclude={1}) == [0, 5, 3]
    assert unrelated_features(stats, 9, min_frequency=0.01, exclude={1}) == [0, 5, 3], "fewer when fewer qualify"
    spatial_mass = torch.tensor([1.0, 0.0, 9.0, 4.0, 2.0, 3.0])  # e.g. class maps summed over locations
    assert unrelated_features(stats, 3, min_frequency=0.01, mass=spatial_mass) == [3, 5, 4]
    by_map_mass = torch.tensor([1.0, 0.0, 0.0, 4.0, 0.0, 2.0])
    assert unrelated_features(stats, 2, min_frequency=0.01, mass=by_map_mass) == [3, 5]


def test_an_edit_reused_after_changing_its_values_applies_the_new_ones(backbones):
    bb = backbones["pixel-class"]
    sae = make_sae(bb, "none")
    edit = FeatureEdit(sae, clamp={3: 1.0})
    args = dict(seed=0, num_inference_steps=2, guidance_scale=1.0, output_type="pt")
    with steer(bb, [edit]):
        first = bb.generate(1, **args)
    edit.clamp[3] = 40.0
    with steer(bb, [edit]):
        second = bb.generate(1, **args)
    with steer(bb, [FeatureEdit(sae, clamp={3: 40.0})]):
        fresh = bb.generate(1, **args)
    assert not torch.equal(first, second) and torch.equal(second, fresh)


def test_class_code_maps_reject_labels_outside_the_classes(backbones):
    from revelio.steering.selection import ClassCodeMaps

    sae = make_sae(backbones["pixel-class"], "none")
    with pytest.raises(ValueError, match="class ids in 0..1"):
        ClassCodeMaps.from_tokens(sae, torch.randn(2, 4, sae.d_in), [0, 2], 2)


@pytest.mark.parametrize("d_sae, k", [(48, 4), (256, 8), (512, 32)])
def test_kept_values_match_the_sae_code(d_sae, k):
    from revelio.steering.edits import kept_values

    torch.manual_seed(d_sae)
    sae = KSparseAutoencoder(16, d_sae, k)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.5)
    x = torch.randn(300, 16)
    chosen = torch.randperm(d_sae)[:20]
    with torch.no_grad():
        expected = sae.encode(x, dense=True)[:, chosen]
        got = kept_values(sae, x, chosen)
    assert (expected > 0).any()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
