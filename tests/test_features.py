"""Feature analysis against a hand-built SAE whose feature j reads direction j of the input.

Images of class c carry direction c, so every statistic has a ground truth computable by hand.
All coefficients are exact in fp16 (the cache's storage dtype), so results compare exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from revelio.analysis.queries import feature_heatmap, top_features
from revelio.analysis.statistics import activation_by_timestep, feature_stats
from revelio.cache import ActivationCache, write_cache
from revelio.sae import KSparseAutoencoder
from revelio.sae import model as sae_model
from revelio.sae.stats import FeatureStats
from revelio.storage.files import ArtifactFormatError, write_safetensors

HOOK = "mid_block"
NAMES = ["shirt", "sneaker", "bag"]
DEAD_FEATURE = 4  # its encoder row is zero and its bias negative: it never fires

# Pooled: image i has class i % 3 and coefficient CLASS_COEF[i] along its class's direction.
POOLED_LABELS = [i % 3 for i in range(12)]
CLASS_COEF = [1.5, 2.0, 0.5, 3.0, 2.0, 1.0, 0.5, 4.0, 1.5, 2.5, 1.0, 2.5]
SHARED_COEF = {0: 1.0, 1: 3.0, 4: 2.0}  # direction 3, in images of classes 0 and 1
NEGATIVE = {2: (0, -2.0)}  # image 2 has -2 along direction 0, which must not fire feature 0

# Spatial (3 x 3 grid): image i has its class direction at PEAK[i] (coefficient PEAK_COEF[i]) and
# at the next location with half that; direction 3 at (image, location): coefficient.
SIDE = 3
SPATIAL_LABELS = [0, 1, 2, 0, 1, 2]
PEAK = [4, 2, 8, 0, 5, 1]
PEAK_COEF = [2.0, 1.0, 3.0, 2.0, 4.0, 0.5]
SPATIAL_SHARED = {(0, 8): 1.0, (1, 0): 0.5, (1, 4): 0.5}


def _sae() -> KSparseAutoencoder:
    sae = KSparseAutoencoder(d_in=4, d_sae=5, k=2, hook=HOOK)
    encoder = torch.cat([torch.eye(4), torch.zeros(1, 4)])
    with torch.no_grad():
        sae.W_enc.copy_(encoder)
        sae.W_dec.copy_(torch.cat([torch.eye(4), torch.full((1, 4), 0.5)]))
        sae.b_enc.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, -1.0]))
        sae.b_pre.zero_()
    return sae


def _pooled_data() -> torch.Tensor:
    x = torch.zeros(12, 4)
    for image, (label, coef) in enumerate(zip(POOLED_LABELS, CLASS_COEF)):
        x[image, label] = coef
    for image, coef in SHARED_COEF.items():
        x[image, 3] = coef
    for image, (direction, coef) in NEGATIVE.items():
        x[image, direction] = coef
    return x


def _spatial_data() -> torch.Tensor:
    x = torch.zeros(6, SIDE * SIDE, 4)
    for image, (label, peak, coef) in enumerate(zip(SPATIAL_LABELS, PEAK, PEAK_COEF)):
        x[image, peak, label] = coef
        x[image, (peak + 1) % 9, label] = coef / 2
    for (image, location), coef in SPATIAL_SHARED.items():
        x[image, location, 3] = coef
    return x


def _cache(root: Path, data: torch.Tensor, shard_rows: int, timestep: int = 25) -> ActivationCache:
    pooling = "mean" if data.ndim == 2 else "none"
    batches = [{(HOOK, timestep): data[i : i + 5]} for i in range(0, len(data), 5)]
    return ActivationCache(write_cache(root, batches, pooling=pooling, shard_rows=shard_rows)[(HOOK, timestep)])


@pytest.fixture
def pooled(tmp_path: Path) -> ActivationCache:
    return _cache(tmp_path / "pooled", _pooled_data(), shard_rows=5)


@pytest.fixture
def spatial(tmp_path: Path) -> ActivationCache:
    return _cache(tmp_path / "spatial", _spatial_data(), shard_rows=7)  # images span shards


def _top(stats: FeatureStats, feature: int) -> list[tuple[int, float, int]]:
    """A feature's exemplars as (image, activation, location), padding dropped."""
    columns = (stats.top_images, stats.top_activations, stats.top_locations)
    return [row for row in zip(*(column[feature].tolist() for column in columns)) if row[0] >= 0]


def test_pooled_stats_match_hand_counts(pooled):
    stats = feature_stats(_sae(), pooled, top_n=5, labels=POOLED_LABELS, class_names=NAMES)

    assert stats.firing_frequency.tolist() == pytest.approx([4 / 12, 4 / 12, 4 / 12, 3 / 12, 0.0])
    assert stats.image_frequency.tolist() == stats.firing_frequency.tolist()
    assert stats.mean_activation.tolist() == pytest.approx([7.5 / 4, 9.0 / 4, 5.5 / 4, 6.0 / 3, 0.0])
    assert stats.overall_mean_activation.tolist() == pytest.approx([7.5 / 12, 9.0 / 12, 5.5 / 12, 6.0 / 12, 0.0])
    assert stats.max_activation.tolist() == [3.0, 4.0, 2.5, 3.0, 0.0]
    # sorted by activation; the tie in class 1 (images 1 and 4, both 2.0) goes to the lower index
    assert _top(stats, 0) == [(3, 3.0, -1), (9, 2.5, -1), (0, 1.5, -1), (6, 0.5, -1)]
    assert _top(stats, 1) == [(7, 4.0, -1), (1, 2.0, -1), (4, 2.0, -1), (10, 1.0, -1)]
    assert _top(stats, 2) == [(11, 2.5, -1), (8, 1.5, -1), (5, 1.0, -1), (2, 0.5, -1)]
    assert _top(stats, 3) == [(1, 3.0, -1), (4, 2.0, -1), (0, 1.0, -1)]
    assert stats.top_images[DEAD_FEATURE].tolist() == [-1] * 5
    assert stats.top_activations[DEAD_FEATURE].tolist() == [0.0] * 5
    assert stats.top_images.dtype == torch.int64 and stats.top_locations.dtype == torch.int32


def test_pooled_labels_purity_and_dead(pooled):
    stats = feature_stats(_sae(), pooled, labels=POOLED_LABELS, class_names=NAMES)

    assert stats.dominant_label.tolist() == [0, 1, 2, 1, -1]
    assert stats.purity.tolist() == pytest.approx([1.0, 1.0, 1.0, 5 / 6, 0.0])
    # feature 3 fires with 1.0 in a shirt and 3.0 + 2.0 in sneakers: weighted by activation
    assert stats.label_distribution[3].tolist() == pytest.approx([1 / 6, 5 / 6, 0.0])
    assert stats.label_distribution[DEAD_FEATURE].tolist() == [0.0, 0.0, 0.0]
    assert stats.labels == ["shirt (100%)", "sneaker (100%)", "bag (100%)", "sneaker (83%)", "dead"]


def test_labels_without_class_names_use_ids_and_without_labels_stay_empty(pooled):
    by_id = feature_stats(_sae(), pooled, labels=torch.tensor(POOLED_LABELS))
    assert by_id.labels == ["0 (100%)", "1 (100%)", "2 (100%)", "1 (83%)", "dead"]

    unlabelled = feature_stats(_sae(), pooled)
    assert unlabelled.labels == ["", "", "", "", "dead"]
    assert unlabelled.label_distribution.shape == (5, 0)
    assert unlabelled.dominant_label.tolist() == [-1] * 5


def test_spatial_exemplars_take_each_image_once_at_its_peak(spatial):
    stats = feature_stats(_sae(), spatial, top_n=3, labels=SPATIAL_LABELS, class_names=NAMES)

    rows = 6 * SIDE * SIDE
    assert stats.firing_frequency.tolist() == pytest.approx([4 / rows, 4 / rows, 4 / rows, 3 / rows, 0.0])
    assert stats.image_frequency.tolist() == pytest.approx([2 / 6, 2 / 6, 2 / 6, 2 / 6, 0.0])
    assert stats.mean_activation.tolist() == pytest.approx([6.0 / 4, 7.5 / 4, 5.25 / 4, 2.0 / 3, 0.0])
    assert _top(stats, 0) == [(0, 2.0, 4), (3, 2.0, 0)]
    assert _top(stats, 1) == [(4, 4.0, 5), (1, 1.0, 2)]
    assert _top(stats, 2) == [(2, 3.0, 8), (5, 0.5, 1)]
    # image 1 peaks at two locations with equal value: the lower location is reported
    assert _top(stats, 3) == [(0, 1.0, 8), (1, 0.5, 0)]
    # per image the maximum counts once: 1.0 for the shirt, 0.5 (not 0.5 + 0.5) for the sneaker
    assert stats.label_distribution[3].tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert stats.labels == ["shirt (100%)", "sneaker (100%)", "bag (100%)", "shirt (67%)", "dead"]


@pytest.mark.parametrize("data", [_pooled_data, _spatial_data], ids=["pooled", "spatial"])
def test_streaming_does_not_change_the_answer(tmp_path, monkeypatch, data):
    labels = POOLED_LABELS if data is _pooled_data else SPATIAL_LABELS
    reference = feature_stats(_sae(), _cache(tmp_path / "one", data(), shard_rows=1000), top_n=2, labels=labels)
    cache = _cache(tmp_path / "sharded", data(), shard_rows=7)
    monkeypatch.setattr(sae_model, "ENCODE_ELEMENTS", 15)  # 3 rows per encoder call
    for chunk_rows in (1, 2, 4, 9, 1000):
        stats = feature_stats(_sae(), cache, top_n=2, labels=labels, chunk_rows=chunk_rows)
        assert stats.labels == reference.labels
        for name, tensor in reference.to_tensors().items():
            assert torch.equal(getattr(stats, name), tensor), (chunk_rows, name)


def test_round_trips_through_tensors_and_a_safetensors_file(spatial, tmp_path):
    stats = feature_stats(_sae(), spatial, labels=SPATIAL_LABELS, class_names=NAMES)

    rebuilt = FeatureStats.from_tensors(stats.to_tensors(), stats.labels)
    path = tmp_path / "stats.safetensors"
    stats.save(path)
    for copy in (rebuilt, FeatureStats.load(path)):
        assert copy.labels == stats.labels
        for name, tensor in stats.to_tensors().items():
            assert torch.equal(getattr(copy, name), tensor)

    write_safetensors(stats.to_tensors(), tmp_path / "bare.safetensors")  # no label metadata
    with pytest.raises(ArtifactFormatError, match="feature_labels"):
        FeatureStats.load(tmp_path / "bare.safetensors")
    with pytest.raises(ArtifactFormatError, match="purity"):
        FeatureStats.from_tensors({k: v for k, v in stats.to_tensors().items() if k != "purity"}, stats.labels)
    with pytest.raises(ArtifactFormatError, match="number of features"):
        FeatureStats.from_tensors(stats.to_tensors(), stats.labels[:-1])


def test_bad_inputs_get_clear_errors(pooled):
    with pytest.raises(ValueError, match="one integer per image"):
        feature_stats(_sae(), pooled, labels=POOLED_LABELS[:-1])
    with pytest.raises(ValueError, match="0..2"):
        feature_stats(_sae(), pooled, labels=[3] + POOLED_LABELS[1:], class_names=NAMES)
    with pytest.raises(ValueError, match="channels"):
        feature_stats(KSparseAutoencoder(d_in=8, d_sae=5, k=2), pooled)
    with pytest.raises(ValueError, match="trained on 'up_blocks.1'"):
        feature_stats(KSparseAutoencoder(d_in=4, d_sae=5, k=2, hook="up_blocks.1"), pooled)


def test_activation_by_timestep_rows_follow_increasing_timesteps(tmp_path):
    data = _pooled_data()
    batches = [{(HOOK, 25): data, (HOOK, 250): 2 * data}]
    paths = write_cache(tmp_path, batches, pooling="mean")
    caches = {250: ActivationCache(paths[(HOOK, 250)]), 25: ActivationCache(paths[(HOOK, 25)])}

    means = activation_by_timestep(_sae(), caches)

    expected = torch.tensor([7.5, 9.0, 5.5, 6.0, 0.0]) / 12
    assert means.shape == (2, 5)
    assert torch.allclose(means, torch.stack([expected, 2 * expected]))
    with pytest.raises(ValueError, match="keyed 25"):
        activation_by_timestep(_sae(), {25: caches[250]})


def test_heatmap_and_top_features_of_one_image():
    sae, tokens = _sae(), _spatial_data()[0]

    heatmap = feature_heatmap(sae, tokens, feature=0, grid_side=SIDE)
    expected = torch.zeros(SIDE, SIDE)
    expected[1, 1], expected[1, 2] = 2.0, 1.0  # locations 4 and 5, row-major
    assert torch.equal(heatmap, expected)
    assert feature_heatmap(sae, tokens, feature=3, grid_side=SIDE)[2, 2] == 1.0
    assert not feature_heatmap(sae, tokens, feature=DEAD_FEATURE, grid_side=SIDE).any()

    assert top_features(sae, tokens) == [(0, 2.0), (3, 1.0)]
    assert top_features(sae, _pooled_data()[1]) == [(3, 3.0), (1, 2.0)]
    assert top_features(sae, _pooled_data()[1], n=1) == [(3, 3.0)]
    with pytest.raises(ValueError, match="grid_side"):
        feature_heatmap(sae, tokens, feature=0, grid_side=2)


def test_random_spatial_cache_matches_a_dense_reference(tmp_path):
    """Against a brute-force computation with dense [rows, d_sae] codes, on a random SAE."""
    torch.manual_seed(0)
    sae = KSparseAutoencoder(d_in=6, d_sae=24, k=3)
    cache = _cache(tmp_path, torch.randn(10, 16, 6), shard_rows=11)
    labels = torch.randint(0, 3, (10,))
    stats = feature_stats(sae, cache, top_n=4, labels=labels, chunk_rows=5)

    with torch.no_grad():
        dense = sae.encode(cache.read_all()["activations"], dense=True)
    per_image, where = dense.reshape(10, 16, 24).max(dim=1)  # [images, d_sae]
    assert torch.allclose(stats.firing_frequency, (dense > 0).float().mean(0))
    assert torch.allclose(stats.max_activation, dense.max(0).values)
    assert torch.allclose(stats.overall_mean_activation, dense.mean(0))
    for feature in range(24):
        strengths = per_image[:, feature]
        images = [i for i in strengths.argsort(descending=True).tolist() if strengths[i] > 0][:4]
        assert stats.top_images[feature, : len(images)].tolist() == images
        assert stats.top_locations[feature, : len(images)].tolist() == where[images, feature].tolist()
        mass = torch.zeros(3).index_add_(0, labels, strengths)
        if mass.sum() > 0:
            assert torch.allclose(stats.label_distribution[feature], mass / mass.sum())
