"""Probes: they learn what is learnable, round-trip through the Hub format, and refuse bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import revelio
from revelio.probes import DiffCProbe, LinearProbe, Probe, Split, split_train_validation
from revelio.sae import KSparseAutoencoder
from revelio.storage.files import ArtifactFormatError

NAMES = ["zero", "one", "two"]


def blobs(n: int = 600, d: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.randn(3, d, generator=g) * 3
    return centres[labels] + torch.randn(n, d, generator=g) * 2 + 50, labels


def spatial_maps(n: int = 300, side: int = 4, channels: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c lights up channel 0 in image row c: only the spatial layout tells classes apart."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    maps = torch.randn(n, channels, side, side, generator=g) * 0.5
    for i, c in enumerate(labels.tolist()):
        maps[i, 0, c] += 3.0
    return maps.flatten(2).transpose(1, 2), labels  # [N, H*W, C] tokens


def test_linear_probe_learns_separable_classes():
    x, y = blobs()
    train, val = split_train_validation(x[:450], y[:450])
    probe = LinearProbe.fit(train, val, NAMES, hook="mid_block", timestep=25, pooling="mean")
    assert probe.accuracy(x[450:], y[450:]) > 0.95
    probs = probe.predict_proba(x[450:])
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(150))
    assert probe.config.metrics["l2_inverse_strength"] in (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def test_diff_c_reads_the_spatial_layout():
    x, y = spatial_maps()
    train, val = split_train_validation(x[:240], y[:240])
    probe = DiffCProbe.fit(train, val, NAMES, grid_side=4, epochs=25, hook="mid_block", timestep=25, pooling="none")
    assert probe.accuracy(x[240:], y[240:]) > 0.9
    pooled = LinearProbe.fit(Split(train.features.mean(1), train.labels), Split(val.features.mean(1), val.labels), NAMES)
    assert pooled.accuracy(x[240:].mean(1), y[240:]) < 0.7, "the task really needs the layout"


@pytest.mark.parametrize("kind", ["linear", "diff-c"])
def test_save_and_load_round_trip_with_class_names(kind, tmp_path):
    if kind == "linear":
        x, y = blobs(150)
        probe = LinearProbe.fit(*split_train_validation(x, y), NAMES, hook="mid_block", timestep=25, pooling="mean")
    else:
        x, y = spatial_maps(60)
        probe = DiffCProbe.fit(*split_train_validation(x, y), NAMES, grid_side=4, epochs=2)
    probe.save_pretrained(tmp_path / "probes" / "mid_block" / "t25")
    loaded = Probe.from_pretrained(tmp_path, subfolder="probes/mid_block/t25")
    assert type(loaded) is type(probe) and loaded.class_names == NAMES
    assert loaded.config == probe.config
    torch.testing.assert_close(loaded.predict_proba(x), probe.predict_proba(x), rtol=0, atol=0)
    wrong = DiffCProbe if kind == "linear" else LinearProbe
    with pytest.raises(ArtifactFormatError, match=f"holds a {probe.kind} probe"):
        wrong.from_pretrained(tmp_path, subfolder="probes/mid_block/t25")


def test_feature_dimension_mismatch_is_explained():
    x, y = blobs(150)
    probe = LinearProbe.fit(*split_train_validation(x, y), NAMES, hook="mid_block", timestep=25, pooling="mean")
    with pytest.raises(ValueError, match="takes pooled features .* with 20 channels; got shape \\(4, 16\\).*mid_block"):
        probe.predict_proba(torch.randn(4, 16))
    maps, labels = spatial_maps(30)
    diff_c = DiffCProbe.fit(*split_train_validation(maps, labels), NAMES, grid_side=4, epochs=1)
    with pytest.raises(ValueError, match="Diff-C takes \\[N, 16, 8\\] tokens"):
        diff_c.predict_proba(torch.randn(2, 8))


def test_classify_extracts_and_predicts(backbones):
    bb = backbones["pixel-class"]
    rng = np.random.default_rng(0)
    images = [np.full((16, 16), 30 if i % 2 else 220, dtype=np.uint8) + rng.integers(0, 20, (16, 16), dtype=np.uint8) for i in range(60)]
    labels = torch.tensor([i % 2 for i in range(60)])
    features = revelio.extract(bb, images, ["mid_block"], [50])[("mid_block", 50)]
    probe = LinearProbe.fit(*split_train_validation(features[:40], labels[:40]), ["light", "dark"],
                            hook="mid_block", timestep=50, pooling="mean")
    probs = revelio.classify(bb, probe, images[40:])
    assert probs.shape == (20, 2)
    assert (probs.argmax(dim=1) == labels[40:]).float().mean() > 0.9

    sae = KSparseAutoencoder(d_in=features.shape[1], d_sae=64, k=8)
    codes = sae.encode(features, dense=True).detach()
    code_probe = LinearProbe.fit(*split_train_validation(codes[:40], labels[:40]), ["light", "dark"],
                                 hook="mid_block", timestep=50, pooling="mean", sae="mid_block/t50/mean")
    with pytest.raises(ValueError, match="reads SAE codes; pass sae="):
        revelio.classify(bb, code_probe, images[40:])
    assert revelio.classify(bb, code_probe, images[40:], sae=sae).shape == (20, 2)
