"""The steering measurement's image quality: each class's steered images against real images of that class."""

from __future__ import annotations

import pytest
import torch

import revelio
from revelio.errors import ConfigError
from revelio.formats.metrics import Steering
from revelio.release.steering_measurement import (
    SteeringMeasureConfig,
    _choose_exemplars,
    _load,
    checked_cells,
    judge,
    measure_steering,
    sources,
)
from revelio.release.steering_quality import ClassQuality
from revelio.steering.selection import ClassCodeMaps, nth_of_each_class


def test_nth_of_each_class_is_one_row_per_class_in_class_order():
    labels = [2, 0, 1, 0, 2, 1, 0]
    assert nth_of_each_class(labels, 3, 0) == [1, 2, 0] and nth_of_each_class(labels, 3, 1) == [3, 5, 4]
    with pytest.raises(ValueError, match="class 1 has 2 images"):
        nth_of_each_class(labels, 3, 2)
    with pytest.raises(ConfigError, match="exemplars"):
        checked_cells(SteeringMeasureConfig(clamp_to="max", pooling="mean", exemplars=1))


def test_each_class_is_compared_with_its_own_real_images_beyond_the_floor_sample():
    torch.manual_seed(0)
    real = {0: torch.randn(300, 4), 1: torch.randn(300, 4) + 3}
    quality = ClassQuality(classifier=None, real=real)  # type: ignore[arg-type]  # distances need no classifier
    like_zero = torch.randn(40, 4)
    assert quality.distance(0, like_zero) < 1 < quality.distance(1, like_zero)
    assert quality.floor(0, 40) < 1 and quality.floor(1, 40) < 1
    # the floor sample is not part of what the others are compared with: a set equal to it is still a sample away
    assert quality.distance(0, real[0][:40]) == pytest.approx(quality.floor(0, 40))
    assert quality.distance(0, torch.randn(299, 4)) is None, "too few real images beyond the floor sample"


@pytest.fixture(scope="module")
def release():
    return revelio.load_release("bundled")


def test_real_test_images_are_grouped_by_their_own_class(release):
    classifier = release.reference_classifier()
    quality = ClassQuality.load(release, classifier)
    assert sorted(quality.real) == list(range(10)) and all(len(f) == 1000 for f in quality.real.values())
    head = classifier.net[-1]  # the logits from the penultimate features
    for c, features in quality.real.items():
        assert float((head(features).argmax(-1) == c).float().mean()) > 0.6, release.class_names[c]


def test_the_chosen_exemplars_maps_are_what_the_clamps_follow_and_all_images_choose_the_features(release, tmp_path):
    config = SteeringMeasureConfig(cells=["mid_block:100"], features_per_class=3, class_features=["Bag=5"], exemplars=2,
                                   strengths=[2.0], per_source=1, steps=2, budget=1.0, out=tmp_path)
    backbone = release.backbone(device="cpu")
    steering = _load(config, checked_cells(config), release, backbone)
    origins = sources(config, backbone, release)
    shares = _choose_exemplars(steering, origins, 10, judge(release, backbone)[1])
    assert all(len(row) == 2 for row in shares)
    images, labels = release.held_out_examples()
    candidates = [nth_of_each_class(labels, 10, n) for n in range(2)]
    assert steering.exemplar == [candidates[max((0, 1), key=lambda n: shares[c][n])][c] for c in range(10)], "ties: the first"
    (sae, chosen_by), follow = steering.saes[0], steering.targets[0]
    tokens = revelio.extract(backbone, images, ["mid_block"], [100], pooling="none", seed=release.info.seed)[("mid_block", 100)]
    rows = steering.exemplar
    torch.testing.assert_close(follow.maps, ClassCodeMaps.from_tokens(sae, tokens[rows], [labels[i] for i in rows], 10).maps)
    assert not torch.equal(chosen_by.maps, follow.maps), "the features are chosen on every held-out image"
    edit = steering.edits(4, 2.0)[0]
    assert list(edit.clamp) == chosen_by.selective(4, 3)
    for f, value in edit.clamp.items():
        torch.testing.assert_close(value, 2.0 * follow.map(4, f))
    assert list(steering.edits(8, 2.0)[0].clamp) == chosen_by.selective(8, 5), "Bag clamps its own number of features"
    unrelated = set(steering.edits(None, 2.0)[0].clamp)
    assert len(unrelated) == 3 and not unrelated & set(chosen_by.selective(8, 5)), "the control: as many as most classes, none of theirs"
    # the whole measurement stores each class's exemplar and its validation shares, and reads them back
    measured = measure_steering(config, release, backbone)
    stored = Steering.read(tmp_path / "steering.json")
    assert stored.exemplars == 2 and stored.per_class == measured.per_class
    assert [stored.per_class[name].exemplar for name in release.class_names] == rows
    assert [stored.per_class[name].exemplar_validation for name in release.class_names] == shares
    assert stored.class_features_per_class == {"Bag": 5} and [len(f) for f in stored.per_class["Bag"].features] == [5]
    with pytest.raises(ConfigError, match="CLASS=N"):
        measure_steering(SteeringMeasureConfig(cells=["mid_block:100"], class_features=["Sandals=4"]), release, backbone)


@pytest.mark.slow  # generates about 600 small images
def test_steered_images_are_compared_with_real_images_of_their_target(release, tmp_path):
    config = SteeringMeasureConfig(cells=["up_blocks.1:100"], features_per_class=16, strengths=[3.0], per_source=2, steps=10,
                                   out=tmp_path)
    measured = measure_steering(config, release)
    stored = Steering.read(tmp_path / "steering.json")
    assert stored.per_class == measured.per_class
    for name, row in stored.per_class.items():
        assert None not in (row.frechet_steered, row.frechet_unsteered, row.frechet_model, row.frechet_real), name
        assert row.frechet_real < row.frechet_model < row.frechet_unsteered, (name, row)
        assert stored.sweep[0].frechet_steered_per_class[name] == row.frechet_steered
    steered_well = [row for row in stored.per_class.values() if row.success >= 0.9]
    assert steered_well and all(row.frechet_steered < row.frechet_unsteered for row in steered_well)


def test_the_committed_measurement_steers_every_class_within_its_budget(release):
    measured = release.read_metrics("steering", Steering)
    rows = measured.per_class.values()
    assert measured.within_budget and measured.side_effect.unrelated_class_change_rate <= measured.budget == 0.25
    assert measured.mean_success >= 0.8 and min(row.success for row in rows) >= 0.5 and measured.mean_baseline < 0.1
    assert all(source.images >= 5 for source in measured.sources)
    for name, row in measured.per_class.items():
        assert row.frechet_real < row.frechet_steered and row.frechet_real < row.frechet_model, name
        assert row.exemplar is not None and len(row.exemplar_validation) == measured.exemplars, name


def test_without_a_reference_classifier_there_is_no_frechet_distance(release, monkeypatch):
    import revelio.release.steering_measurement as measurement

    monkeypatch.setattr(measurement, "reference_classifier", lambda release: None)  # a release whose gate was skipped
    measured = measure_steering(SteeringMeasureConfig(cells=["mid_block:100"], features_per_class=2, strengths=[2.0], per_source=1,
                                                      steps=2), release)
    assert measured.judge.startswith("best probe")
    assert all(row.frechet_steered is row.frechet_real is None for row in measured.per_class.values())
    assert set(measured.sweep[0].frechet_steered_per_class.values()) == {None}
