"""The cheaper steering edit computes exactly what the plain one did.

``reference_apply`` is ``FeatureEdit.apply`` as it was before its cost was cut (every step framed
the inputs with copies, partitioned a float copy of the pre-activations, multiplied by an all-ones
window): the fast path must give the same bits for every kind of edit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from revelio.activations.capture import pool, to_tokens
from revelio.sae import KSparseAutoencoder
from revelio.steering import FeatureEdit, steer
from revelio.steering.edits import _kth_largest, kept_values


def reference_kept(sae: KSparseAutoencoder, centred: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    pre = torch.addmm(sae.b_enc, centred, sae.W_enc.t())
    value = pre[:, chosen]
    array = pre.detach().numpy()
    position = sae.d_sae - sae.k
    kth = torch.from_numpy(np.partition(array, position, axis=-1)[:, position : position + 1])
    return (value.relu() if sae.config.relu else value) * (value >= kth)


def reference_grid(maps: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    grid = F.interpolate(maps[:, None].float(), size=tuple(output.shape[-2:]), mode="bilinear", align_corners=False)
    return grid.flatten(1).to(output.dtype)


@torch.no_grad()
def reference_apply(edit: FeatureEdit, output: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor | None:
    """The plain formula: x + decode(new codes) - decode(old codes) of the chosen features, times window and mask."""
    sae = edit.sae
    active = None
    if edit.timesteps is not None:
        t = torch.as_tensor(timestep).flatten()
        t = t.expand(output.shape[0]) if t.numel() == 1 else t
        active = (t >= edit.timesteps[1]) & (t <= edit.timesteps[0])
        if not bool(active.any()):
            return None
    tokens = to_tokens(output)
    read = pool(tokens, "mean")[:, None] if sae.config.pooling == "mean" else tokens
    features = edit.features
    columns = []
    for f in features:
        value = edit.clamp.get(f, 0.0)
        if isinstance(value, torch.Tensor) and value.ndim == 2:
            columns.append(reference_grid(value[None], output)[0])
        else:
            columns.append(torch.full((read.shape[1],), float(value)))
    chosen = torch.tensor(features)
    is_clamp = torch.tensor([f in edit.clamp for f in features])
    clamp_to = torch.stack(columns, dim=-1)
    amounts = torch.tensor([float(edit.add.get(f, 0.0)) for f in features])
    directions = sae.W_dec[chosen] / (sae.input_scale if sae.config.input_normalization == "scale" else 1.0)
    centred, _, std = sae.frame(read.reshape(-1, sae.d_in))
    old = reference_kept(sae, centred, chosen).view(*read.shape[:-1], -1)
    new = torch.where(is_clamp, clamp_to, old + amounts)
    delta = (new - old) @ directions
    if std is not None:
        delta = delta * std.view(*read.shape[:-1], 1)
    if edit.mask is not None:
        mask = edit.mask if edit.mask.ndim == 3 else edit.mask[None]
        if mask.shape[0] not in (1, output.shape[0]):
            mask = mask.repeat(output.shape[0] // mask.shape[0], 1, 1)
        delta = delta * reference_grid(mask, output)[..., None]
    if active is not None:
        delta = delta * active.view(-1, 1, 1).to(delta.dtype)
    edited = tokens + delta
    return edited.transpose(1, 2).reshape(output.shape)


def make_sae(pooling: str, normalization: str = "scale", d_in: int = 16, d_sae: int = 96, k: int = 6) -> KSparseAutoencoder:
    torch.manual_seed(0)
    scale = {"input_scale": 0.8} if normalization == "scale" else {"input_normalization": "unit_norm"}
    sae = KSparseAutoencoder(d_in, d_sae, k, pooling=pooling, hook="mid_block", **scale)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3)
        sae.b_pre.normal_(0, 0.1)
    return sae


CASES = {
    "class maps, every step (the app's default)": dict(maps=True),
    "numbers and shifts": dict(clamp={3: 2.0, 7: 0.0}, add={11: -1.5}),
    "a mask and a window some rows are outside": dict(maps=True, mask=True, timesteps=(600, 200)),
    "shifts only": dict(add={2: 3.0, 5: -1.0}),
}


@pytest.mark.parametrize("pooling", ["none", "mean"])
@pytest.mark.parametrize("normalization", ["scale", "unit_norm"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_fast_edit_gives_the_same_bits_as_the_plain_formula(pooling, normalization, case):
    settings = dict(CASES[case])
    if settings.pop("maps", False) and pooling == "none":
        torch.manual_seed(1)
        settings["clamp"] = {f: torch.rand(5, 5) * 3 for f in (1, 4, 9, 20, 33)}
    elif "clamp" not in settings and "add" not in settings:
        settings["clamp"] = {f: 1.5 for f in (1, 4, 9)}
    if settings.pop("mask", False):
        settings["mask"] = torch.rand(2, 9, 9)
    sae = make_sae(pooling, normalization)
    edit = FeatureEdit(sae, **settings)
    torch.manual_seed(2)
    for step, t in enumerate([900, 500, 100]):
        output = torch.randn(4, sae.d_in, 7, 7) * (1 + step)
        timestep = torch.tensor([t, t, t - 450, t - 450]) if edit.timesteps else torch.tensor(t)
        expected = reference_apply(edit, output, timestep)
        got = edit.apply(output, timestep)
        if expected is None:
            assert got is None
            continue
        assert got.shape == output.shape and torch.equal(got, expected), f"{case}, t={t}"


def test_the_integer_partition_finds_the_same_kth_value():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for shift in (-6.0, -1.0, 0.0, 2.0):  # rows with fewer than k positive values, and rows with many
            values = (rng.standard_normal((300, 40)) + shift).astype(dtype)
            values[::7, 3], values[::5, 4] = -0.0, 0.0
            values[::3] = values[::3].round()  # ties
            for k in (1, 4, 8):
                expected = np.partition(values, 40 - k, axis=-1)[:, 40 - k]
                got = _kth_largest(torch.from_numpy(values.copy()), k)[:, 0].numpy()
                assert np.array_equal(got, expected), (dtype, shift, k)


def test_kept_values_still_match_the_sae_code():
    sae = make_sae("none", d_sae=200, k=12)
    x = torch.randn(500, sae.d_in)
    chosen = torch.arange(0, 200, 7)
    torch.testing.assert_close(kept_values(sae, x, chosen), sae.encode(x, dense=True).detach()[:, chosen])


def test_steered_generation_is_unchanged(backbones, monkeypatch):
    """Through a whole generation with guidance: the same images as the plain formula gives."""
    bb = backbones["pixel-class"]
    sae = make_sae("none", d_in=bb.hook_channels["mid_block"])
    torch.manual_seed(3)
    edit = FeatureEdit(sae, clamp={f: torch.rand(4, 4) * 2 for f in (0, 5, 17)}, add={30: 1.0})
    with steer(bb, [edit]):
        fast = bb.generate(0, seed=4, num_inference_steps=4, guidance_scale=3.0, output_type="pt")
    monkeypatch.setattr(FeatureEdit, "apply", reference_apply)
    with steer(bb, [edit]):
        expected = bb.generate(0, seed=4, num_inference_steps=4, guidance_scale=3.0, output_type="pt")
    assert torch.equal(fast, expected)
