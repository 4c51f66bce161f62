"""Concept removal: SAeUron's feature score, both removal methods against their definitions, the
decision per generation, image-quality numbers, removal.json, and the measurement on the bundled release."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import revelio
from revelio.data.datasets import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR
from revelio.errors import ConfigError
from revelio.formats.removal import Removal
from revelio.probes.reference_classifier import ReferenceClassifier, frechet_distance
from revelio.release.removal_measurement import (
    RemovalMeasureConfig,
    Source,
    caption_template,
    combinations,
    measure_removal,
    prepare_removal,
    retention,
    sources,
)
from revelio.sae import KSparseAutoencoder
from revelio.steering import steer
from revelio.steering.removal import ConceptRemoval, ConceptStatistics, StepRemoval, concept_removal
from tests.leaks import count_forward_hooks
from tests.two_label_sets import COLOURS, SHAPES, build_two_label_set_release

ROOT = Path(__file__).resolve().parents[1]
HOOK = "mid_block"


def make_sae(d_in: int, seed: int = 0) -> KSparseAutoencoder:
    torch.manual_seed(seed)
    sae = KSparseAutoencoder(d_in, 24, 3, hook=HOOK, timestep=500, pooling="none", input_scale=0.7)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_pre.normal_(0, 0.1)
    return sae


def labelled_tokens(sae: KSparseAutoencoder, per_concept: int = 6, locations: int = 16) -> tuple[torch.Tensor, list[int]]:
    """Tokens of 3 concepts; concept 0's images carry feature 5's encoder direction at half their locations."""
    torch.manual_seed(1)
    tokens = torch.randn(3 * per_concept, locations, sae.d_in) * 0.3
    labels = [i // per_concept for i in range(3 * per_concept)]
    direction = sae.W_enc[5].detach() / sae.W_enc[5].detach().norm()
    tokens[:per_concept, : locations // 2] += 4 * direction / sae.input_scale
    return tokens, labels


def test_scores_are_saeurons_normalised_difference_of_mean_activations():
    sae = make_sae(8)
    tokens, labels = labelled_tokens(sae)
    stats = ConceptStatistics.from_tokens(sae, tokens, labels, 3)
    dense = sae.encode(tokens, dense=True).detach()  # [N, T, d_sae]
    own = dense[:6].mean((0, 1))
    others = dense[6:].mean((0, 1))
    expected = own / own.sum() - others / others.sum()
    torch.testing.assert_close(stats.scores(0), expected, atol=1e-5, rtol=1e-4)
    assert stats.features(0, 3)[0] == 5, "the planted feature scores highest"
    assert all(stats.scores(0)[f] > 0 for f in stats.features(0, 24)), "only positive scores are chosen"
    others_code, others_map = stats.others(0)
    torch.testing.assert_close(others_code, others, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(others_map, tokens[6:].mean(0), atol=1e-5, rtol=1e-4)
    gate = stats.gate(0, [5])
    evidence = dense[..., 5].mean(1)
    assert bool((evidence[:6] > gate).all()) and bool((evidence[6:] <= gate).all()), "the gate separates the concept's images"


def test_statistics_refuse_concepts_without_images():
    sae = make_sae(8)
    tokens, labels = labelled_tokens(sae)
    with pytest.raises(ValueError, match="needs images"):
        ConceptStatistics.from_tokens(sae, tokens, labels, 4)


def step_for(sae: KSparseAutoencoder, tokens: torch.Tensor, labels: list[int], method: str) -> StepRemoval:
    return ConceptStatistics.from_tokens(sae, tokens, labels, 3).step(sae, 0, 3, method)


def test_ablation_equals_the_dense_definition_where_the_features_fire():
    sae = make_sae(8)
    tokens, labels = labelled_tokens(sae)
    step = step_for(sae, tokens, labels, "ablate")
    removal = ConceptRemoval(HOOK, {500: step}, "ablate")
    maps = tokens.transpose(1, 2).reshape(len(tokens), sae.d_in, 4, 4)
    got = removal.apply(maps, torch.tensor(500)).flatten(2).transpose(1, 2)
    with torch.no_grad():
        old = sae.encode(tokens, dense=True)
        chosen = old[..., step.features]
        firing = (chosen > step.thresholds) & (chosen.sum(-1).mean(-1) > step.gate).view(-1, 1, 1)
        new = old.clone()
        new[..., step.features] = torch.where(firing, torch.zeros_like(chosen), chosen)
        expected = tokens + sae.decode(new) - sae.decode(old)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.equal(got[:6], tokens[:6]), "the concept's images change"
    torch.testing.assert_close(got[6:], tokens[6:]), "images without the concept stay as they were"


def test_a_negative_multiplier_pushes_the_features_below_zero():
    sae = make_sae(8)
    tokens, labels = labelled_tokens(sae)
    step = step_for(sae, tokens, labels, "ablate")
    ablated = ConceptRemoval(HOOK, {500: step}, "ablate").apply(tokens, torch.tensor(500)) - tokens
    pushed = ConceptRemoval(HOOK, {500: step}, "ablate", multiplier=-2.0).apply(tokens, torch.tensor(500)) - tokens
    torch.testing.assert_close(pushed, 3 * ablated, atol=1e-5, rtol=1e-5)


def test_replacement_puts_the_others_mean_where_the_features_fire():
    sae = make_sae(8)
    tokens, labels = labelled_tokens(sae)
    step = step_for(sae, tokens, labels, "replace")
    got = ConceptRemoval(HOOK, {500: step}, "replace").apply(tokens, torch.tensor(500))
    values = step.values(tokens)
    where = ((values > step.thresholds) & step.shows(values).view(-1, 1, 1)).any(-1)
    assert bool(where[:6, :8].any()) and not bool(where[6:].any())
    torch.testing.assert_close(got[where], step.replacement[None].expand_as(tokens)[where])
    torch.testing.assert_close(got[~where], tokens[~where])


def test_which_images_show_the_concept_is_decided_at_the_first_step_of_each_generation():
    sae = make_sae(8)
    tokens, labels = labelled_tokens(sae)
    step = step_for(sae, tokens, labels, "replace")
    removal = ConceptRemoval(HOOK, {900: step, 100: step}, "replace")
    first = removal.apply(tokens, torch.tensor(900))
    assert not torch.equal(first[:6], tokens[:6])
    # A later step of the same generation keeps the decision: images 6..11 now show the concept but
    # were decided not to, so they stay as they are...
    swapped = torch.cat([tokens[6:12], tokens[:6], tokens[12:]])
    later = removal.apply(swapped, torch.tensor(100))
    torch.testing.assert_close(later[6:12], swapped[6:12])
    # ...until a new generation starts (the timestep rises again) and decides anew.
    renewed = removal.apply(swapped, torch.tensor(900))
    assert not torch.equal(renewed[6:12], swapped[6:12])
    torch.testing.assert_close(renewed[:6], swapped[:6])


def test_removal_refuses_what_cannot_work():
    sae = make_sae(8)
    tokens, labels = labelled_tokens(sae)
    step = step_for(sae, tokens, labels, "ablate")
    with pytest.raises(ValueError, match="method must be one of"):
        ConceptRemoval(HOOK, {500: step}, "erase")
    with pytest.raises(ValueError, match="needs a replacement"):
        ConceptRemoval(HOOK, {500: step}, "replace")
    pooled = KSparseAutoencoder(8, 24, 3, pooling="mean")
    with pytest.raises(ValueError, match="spatial SAE"):
        StepRemoval(pooled, [1], torch.zeros(1), 0.0)
    with pytest.raises(ValueError, match="no step"):
        ConceptRemoval(HOOK, {}, "ablate")


def test_removal_runs_inside_generation_and_leaves_no_hook(backbones):
    bb = backbones["pixel-class"]
    sae = make_sae(bb.hook_channels[HOOK])
    images = [torch.rand(bb.image_channels, bb.resolution, bb.resolution) for _ in range(6)]
    from revelio.activations.capture import extract

    tokens = extract(bb, images, [HOOK], [500], pooling="none", progress=False)[(HOOK, 500)]
    stats = ConceptStatistics.from_tokens(sae, tokens, [0, 0, 1, 1, 2, 2], 3)
    before = count_forward_hooks(bb.denoiser)
    plain = bb.generate(0, seed=3, num_inference_steps=3, output_type="pt")
    for method in ("ablate", "replace"):
        removal = concept_removal(HOOK, {500: (sae, stats)}, 0, 3, method)
        for step in removal.steps.values():
            step.gate = float("inf")  # no image shows the concept: nothing may change
        with steer(bb, [removal]):
            untouched = bb.generate(0, seed=3, num_inference_steps=3, output_type="pt")
        torch.testing.assert_close(untouched, plain)
        for step in removal.steps.values():
            step.gate, step.thresholds = float("-inf"), torch.full_like(step.thresholds, float("-inf"))
        with steer(bb, [removal]):
            removed = bb.generate(0, seed=3, num_inference_steps=3, output_type="pt")
        assert not torch.equal(removed, plain), f"{method}: removing everywhere changes the image"
    assert count_forward_hooks(bb.denoiser) == before


def test_frechet_distance_and_classifier_features():
    torch.manual_seed(0)
    a = torch.randn(400, 5)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = a + torch.tensor([3.0, 0, 0, 0, 0])
    assert frechet_distance(a, shifted) == pytest.approx(9.0, rel=1e-4), "a pure shift costs its squared length"
    assert frechet_distance(a, a * 2) > 1.0
    with pytest.raises(ValueError, match="two sets"):
        frechet_distance(a, torch.randn(10, 4))
    classifier = ReferenceClassifier(1, 8, ["a", "b"], width=4)
    features = classifier.features(torch.rand(3, 1, 8, 8) * 2 - 1)
    assert features.shape == (3, 128) and bool((features >= 0).all()), "the penultimate layer, after its ReLU"


def test_removal_json_round_trips():
    row = {"label_set": "class", "features": {"mid_block:999": [1, 2]}, "ua": 0.9, "ira": 0.95, "cra": None,
           "baseline_ua": 0.05, "baseline_ira": 0.95, "baseline_cra": None, "concept_pixel_change": 0.2,
           "others_pixel_change": 0.01, "frechet": 3.0, "artifact_share": 0.1}
    method = {"mean_ua": 0.9, "mean_ira": 0.95, "mean_cra": None, "mean_frechet": 3.0, "artifact_share": 0.1,
              "concept_pixel_change": 0.2, "others_pixel_change": 0.01, "per_concept": {"Bag": row}}
    data = {"release": "bundled", "label_sets": ["class"], "hooks": ["mid_block"], "timesteps": [999], "saes": {"mid_block:999": "mid_block:600"},
            "features": 2, "multiplier": 0.0, "judge": "reference classifier", "confidence_threshold": 0.5, "num_inference_steps": 25,
            "guidance_scale": 4.0, "seed": 0, "images_per_source": 1, "statistics_images": 200, "real_images": 100,
            "baseline": {"frechet": 2.0, "frechet_real": 1.0, "artifact_share": 0.05, "artifact_share_real": 0.01, "accuracy": {"class": 0.95}},
            "methods": {"replace": method}, "app_method": "replace"}
    removal = Removal.from_json(data)
    assert removal.methods["replace"].per_concept["Bag"].cra is None
    assert Removal.from_json(removal.to_json()) == removal


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist (make setup installs it)")
def test_removal_measurement_runs_on_the_bundled_release(tmp_path):
    done = subprocess.run([sys.executable, "train/measure_removal.py", "--release", "bundled", "--hooks", "mid_block",
                           "--features", "2", "--per-source", "1", "--steps", "2", "--real-images", "40", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    result = Removal.read(tmp_path / "removal.json")
    assert set(result.methods) == {"ablate", "replace"} and result.app_method in result.methods
    for method in result.methods.values():
        assert set(method.per_concept) == set(FASHION_MNIST_CLASSES)
        assert method.mean_cra is None, "one label set: no cross-domain retain accuracy"
        assert method.mean_ua == pytest.approx(sum(r.ua for r in method.per_concept.values()) / 10)
    assert result.timesteps and all(key.startswith("mid_block:") for key in result.saes)
    assert json.loads((tmp_path / "removal.json").read_text())["config"]["features"] == 2
    failed = subprocess.run([sys.executable, "train/measure_removal.py", "--methods", "erase"], capture_output=True, text=True, cwd=ROOT)
    assert failed.returncode != 0 and "methods must be some of" in failed.stderr


def test_text_sources_cover_every_concept_of_every_label_set_at_least_twice():
    for sizes in ({"class": 10, "colour": 6}, {"shape": 3, "colour": 2}, {"a": 4, "b": 4}):
        rows = combinations(sizes)
        assert len(rows) == 2 * max(sizes.values()) and len({tuple(r.items()) for r in rows}) == len(rows), "distinct prompts"
        for name, size in sizes.items():
            assert set(Counter(r[name] for r in rows)) == set(range(size)) and min(Counter(r[name] for r in rows).values()) >= 2
        by_first = {}
        for r in rows:
            by_first.setdefault(r[next(iter(sizes))], set()).add(tuple(r.items()))
        assert all(len(v) == 2 for v in by_first.values()), "each concept of the largest set twice, beside different others"


def test_cra_is_the_other_label_sets_recognition_on_every_image():
    sources = [Source(i, f"s{i}", f"s{i}", {"shape": i % 2, "colour": i // 2}) for i in range(4)]
    # shapes: source 0 (shape 0) misread once; colours: sources 2 and 3 (colour 1) read as colour 0 half the time
    predicted = {"shape": {0: torch.tensor([1, 0]), 1: torch.tensor([1, 1]), 2: torch.tensor([0, 0]), 3: torch.tensor([1, 1])},
                 "colour": {0: torch.tensor([0, 0]), 1: torch.tensor([0, 0]), 2: torch.tensor([1, 0]), 3: torch.tensor([0, 1])}}
    ua, ira, cra = retention(sources, predicted, "shape", 0)
    assert (ua, ira) == (0.25, 1.0), "UA: shape-0 images not read as shape 0; IRA: shape-1 images read as shape 1"
    assert cra == 0.75, "CRA of removing a shape is the colour judge's recognition on all images"
    ua, ira, cra = retention(sources, predicted, "colour", 1)
    assert (ua, ira, cra) == (0.5, 1.0, 0.875), "removing a colour: UA and IRA by colour, CRA by shape"
    assert retention([Source(0, "a", 0, {"class": 0}), Source(1, "b", 1, {"class": 1})],
                     {"class": {0: torch.tensor([1]), 1: torch.tensor([1])}}, "class", 0)[2] is None, "one label set: no CRA"


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory) -> revelio.Release:
    return build_two_label_set_release(tmp_path_factory.mktemp("removal-two-sets"))


@pytest.mark.build
def test_removal_on_a_text_release_measures_ua_ira_and_cra_across_its_label_sets(two_sets, tmp_path):
    backbone = two_sets.backbone(device="cpu")
    found = sources(two_sets, backbone, ["shape", "colour"])
    assert [s.condition for s in found] == ["a red disc", "a blue bar", "a red ring", "a blue disc", "a red bar", "a blue ring"]
    config = RemovalMeasureConfig(release=str(two_sets.root), hooks=two_sets.hooks, features=2, per_source=1, steps=2,
                                  real_images=12, out=tmp_path)
    result = measure_removal(config, two_sets, backbone)
    assert result.label_sets == ["shape", "colour"] and set(result.baseline.accuracy) == {"shape", "colour"}
    assert Removal.read(tmp_path / "removal.json") == result
    for method in result.methods.values():
        assert list(method.per_concept) == SHAPES + list(COLOURS)
        assert method.mean_cra == pytest.approx(sum(r.cra for r in method.per_concept.values()) / 5)
        for name, row in method.per_concept.items():
            other = "colour" if row.label_set == "shape" else "shape"
            assert row.label_set == ("shape" if name in SHAPES else "colour")
            assert row.cra is not None and row.baseline_cra == pytest.approx(result.baseline.accuracy[other]), \
                f"removing {name!r} ({row.label_set}) is CRA-judged by the {other} set on the unedited images"
    setup = prepare_removal(two_sets, backbone, ["colour"], two_sets.hooks[-1:], steps=2)
    assert setup.edits("colour", 1, "replace", 2) and set(setup.statistics) == {"colour"}


@pytest.mark.build
def test_removal_refuses_what_a_release_cannot_measure(two_sets, backbones):
    text = two_sets.backbone(device="cpu")
    with pytest.raises(ConfigError, match="no label set 'size'.*\\['shape', 'colour'\\]"):
        prepare_removal(two_sets, text, ["size"], two_sets.hooks, steps=2)
    with pytest.raises(ConfigError, match="no label set 'size'"):
        measure_removal(RemovalMeasureConfig(release=str(two_sets.root), label_sets=["size"], hooks=two_sets.hooks), two_sets, text)
    with pytest.raises(ConfigError, match="a text model with a caption template or a model conditioned on"):
        sources(two_sets, backbones["pixel-class"], ["shape"])
    untemplated = SimpleNamespace(info=SimpleNamespace(caption_template=None), label_sets=["shape", "colour"])
    with pytest.raises(ConfigError, match="caption template over its label sets"):
        caption_template(untemplated, SimpleNamespace(conditioning="text", prompt_template=None))
    with pytest.raises(ConfigError, match="not hooks of this release"):
        prepare_removal(two_sets, text, ["shape"], ["down_blocks.9"], steps=2)
