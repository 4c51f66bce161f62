"""A release with two label sets (built by tests/two_label_sets.py): a tiny SD model whose captions
are "a {colour} {shape}", built on a ``datasets`` DatasetDict with two ClassLabel columns (saved with
save_to_disk), in-process.

Every label set gets its probes, feature labels, purity, held-out labels, steering targets and
reference classifier; the text quality gate asks for every prompt of the caption template.
"""

from __future__ import annotations

from collections import Counter

import pytest

import revelio
from revelio.errors import ConfigError, DatasetError
from revelio.formats.metrics import Monosemanticity, ProbeGrid, QualityGate, Steering
from tests.two_label_sets import COLOURS, SHAPES, TEMPLATE, build_two_label_set_release

pytestmark = pytest.mark.build


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> revelio.Release:
    return build_two_label_set_release(tmp_path_factory.mktemp("label-sets"))


def test_the_release_records_both_label_sets_and_the_caption_template(release):
    info = release.info
    assert info.label_sets == {"shape": SHAPES, "colour": list(COLOURS)} and info.class_names == SHAPES
    assert info.caption_template == TEMPLATE and info.prompt_template is None, "features are extracted with the empty prompt"
    assert release.label_sets == ["shape", "colour"] and release.label_set_name == "shape"
    assert set(info.label_set_best_cells) == {"colour"}


def test_each_label_set_has_its_own_probes_labels_purity_and_held_out_labels(release):
    colour = release.with_label_set("colour")
    assert colour.class_names == list(COLOURS) and colour.labels_root == release.root / "label_sets" / "colour"
    assert release.with_label_set("shape") is release and colour.with_label_set(None) is release
    assert release.probe().class_names == SHAPES and colour.probe().class_names == list(COLOURS)
    grid = colour.read_metrics("probe_grid", ProbeGrid)
    assert grid.class_names == list(COLOURS) and {r.features for r in grid.rows} == {"diffusion", "random-weights", "pixels"}
    for view, names in ((release, SHAPES), (colour, list(COLOURS))):
        stats = view.sae(pooling="none").feature_stats
        assert stats.label_distribution.shape[1] == len(names)
        assert all(label == "dead" or label.split(" (")[0] in names for label in stats.labels)
        assert view.read_metrics("monosemanticity", Monosemanticity).cells
    cell = release.best_cell.with_pooling("none")
    same = release.sae(cell), colour.sae(cell)
    assert same[0].W_enc.equal(same[1].W_enc), "the SAEs are shared; only their statistics differ"
    images, shapes = release.held_out_examples()
    _, colours = colour.held_out_examples()
    assert Counter(shapes) == {0: 3, 1: 3, 2: 3} and len(colours) == len(images) and set(colours) <= {0, 1}


def test_steering_targets_are_each_label_sets_concepts_prompted_through_the_caption_template(release):
    by_shape = release.read_metrics("steering", Steering)
    by_colour = release.with_label_set("colour").read_metrics("steering", Steering)
    assert set(by_shape.per_class) == set(SHAPES) and set(by_colour.per_class) == set(COLOURS)
    assert [s.condition for s in by_colour.sources] == ["a red disc", "a blue bar"]
    assert [s.condition for s in by_shape.sources] == ["a red disc", "a blue bar", "a red ring"]
    assert by_colour.judge == "reference classifier", "each label set is judged by its own classifier of real images"


def test_the_text_quality_gate_asks_for_every_prompt_and_judges_every_label_set(release):
    gate = release.read_metrics("quality_gate", QualityGate)
    assert gate.prompt_template == TEMPLATE and set(gate.label_sets) == {"shape", "colour"}
    assert set(gate.label_sets["colour"].per_concept_accuracy_on_samples) == set(COLOURS)
    assert gate.per_class_accuracy_on_samples == gate.label_sets["shape"].per_concept_accuracy_on_samples
    assert (release.root / "label_sets" / "colour" / "reference_classifier" / "model.safetensors").is_file()
    assert release.with_label_set("colour").reference_classifier().class_names == list(COLOURS)


def test_a_label_set_that_is_not_there_is_a_clear_error(release, tmp_path):
    with pytest.raises(ConfigError, match="no label set 'size'.*'shape', 'colour'"):
        release.with_label_set("size")
    from revelio.cache.labels import CacheLabels

    cache = release.root.parent / "work" / "caches" / "train"
    with pytest.raises(DatasetError, match="no label set 'size'.*--label-column"):
        CacheLabels.read(cache, "size")
    assert CacheLabels.read(cache, "colour").class_names == list(COLOURS)


def test_the_backbone_reads_its_sampler_defaults_and_caption_template(release):
    backbone = release.backbone(device="cpu")
    assert (backbone.default_guidance_scale, backbone.default_num_inference_steps) == (3.0, 3)
    assert backbone.prompt_template == TEMPLATE and backbone.label_sets["colour"] == list(COLOURS)


def test_the_app_steers_towards_a_colour_and_reads_it_with_the_colour_probe(release, serve_app, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(serve_app(str(release.root)), verbose=False, download_files=False)
    colour = release.with_label_set("colour")
    cell = colour.best_cell.with_pooling("none")
    features = client.predict(cell.hook, cell.timestep, "none", "colour:blue", 3, api_name="/suggest_features")
    assert features and features == client.predict(cell.hook, cell.timestep, "none", "colour:1", 3, api_name="/suggest_features")
    baseline, steered, before, after, note = client.predict(
        "a red disc", 0, 2, 2.0, cell.hook, cell.timestep, "none", features, "class-map", "colour:1", 2, 999, 0,
        api_name="/steer")
    assert {c["label"] for c in after["confidences"]} == set(COLOURS), "the probe of the target's label set reads both images"
    assert "blue map" in note
    shapes = client.predict("a red disc", 0, 2, 2.0, cell.hook, cell.timestep, "none", features, "class-map", 1, 2, 999, 0,
                            api_name="/steer")[3]
    assert {c["label"] for c in shapes["confidences"]} <= set(SHAPES)
    with pytest.raises(Exception, match="unknown label set 'size'"):
        client.predict("a red disc", 0, 2, 2.0, cell.hook, cell.timestep, "none", features, "class-map", "size:1", 2, 999, 0,
                       api_name="/steer")
    summary = client.predict(cell.hook, cell.timestep, "none", features[0], api_name="/feature")[0]
    assert "colour: **" in summary and "share (colour): blue" in summary, "the feature view shows both label sets"
    images, _ = release.held_out_examples()
    upload = tmp_path / "disc.png"
    images[0].save(upload)
    assert client.predict(handle_file(str(upload)), None, None, None, api_name="/classify")["label"] in SHAPES
