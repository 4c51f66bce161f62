"""Releases of every backbone kind on a labelled image folder with mixed image sizes, built in-process.

Text (tiny SD, referenced by Hub id from a pre-filled offline HF cache, SDXL with a prompt
template), a class-conditional DiT whose own classes are not the dataset's, and an unconditional
pixel model. Each loads with load_release; the quality gate runs only where it can.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

import revelio
from revelio.formats.metrics import Steering
from revelio.release.build import build_release
from revelio.release.release_config import UNSET, ReleaseConfig
from revelio.release.steering_measurement import SteeringMeasureConfig
from revelio.sae.training import SAETrainConfig
from revelio.steps.probe_grid import ProbeGridConfig
from revelio.steps.quality_gate import QualityGateConfig
from revelio.storage.files import read_json
from tests import tiny_models
from tests.helpers import SCREENSHOTS

CLASSES = ["apple", "brick", "cloud"]
pytestmark = pytest.mark.build  # the module builds a release of every backbone kind
SIZES = [(12, 20), (32, 32), (40, 24), (17, 17)]
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def mixed_folder(make_image_folder) -> Path:
    """train/ and test/ splits, one folder per class (so sorted by class), images of four sizes."""
    colours = {name: tuple(200.0 * (c == channel) for channel in range(3)) for c, name in enumerate(CLASSES)}
    return make_image_folder(colours, per_class={"train": 24, "test": 9}, seed=3, noise=25.0, sizes=tuple(SIZES))


def _hub_cache(model: Path, cache: Path, repo: str) -> None:
    """An offline HF cache holding ``model`` as ``repo`` at main, as huggingface_hub lays it out."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(model, folder / "snapshots" / SNAPSHOT)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(SNAPSHOT)


def _build(kind: str, model: str, folder: Path, out: Path, work: Path, pooled: dict | None = None, **extra) -> revelio.Release:
    backbone = revelio.load_backbone(model, device="cpu")
    sae = {"expansion": 2, "k": 4, "batch_size": 32}
    config = ReleaseConfig(
        model=model, out=out, dataset=str(folder), hooks=backbone.hook_points[-2:], timesteps=[100, 500],
        train_images=48, test_images=18, random_images=24, held_out_per_class=3,
        pooled_sae=SAETrainConfig(**{**sae, "total_tokens": 400, **(pooled or {})}),
        spatial_sae=SAETrainConfig(**sae, total_tokens=1600), probes=ProbeGridConfig(cache=UNSET, out=UNSET, max_train=48, epochs=1),
        gate=QualityGateConfig(model="", out=UNSET, per_class=2, epochs=1),
        steering=SteeringMeasureConfig(cells=[], features_per_class=2, strengths=[2.0], per_source=1, steps=2), work=work, **extra,
    )
    build_release(config, f"test build of a {kind} release")
    return revelio.load_release(out)


@pytest.fixture(scope="module")
def releases(mixed_folder, tmp_path_factory) -> dict[str, revelio.Release]:
    tmp = tmp_path_factory.mktemp("any-backbone")
    cache = tmp / "hf-cache"
    _hub_cache(tiny_models.build_stable_diffusion(tmp / "sd-src"), cache, "someone/tiny-sd")
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_CACHE", str(cache))
    patch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    try:
        built = {"sd": _build("sd", "someone/tiny-sd", mixed_folder, tmp / "sd", tmp / "work-sd")}
        built["sdxl"] = _build("sdxl", str(tiny_models.build_sdxl(tmp / "sdxl-src")), mixed_folder, tmp / "sdxl", tmp / "work-sdxl",
                               prompt_template="a photo of a {}")
        built["dit"] = _build("dit", str(tiny_models.build_dit(tmp / "dit-src", ["shirt", "sneaker", "bag"])), mixed_folder,
                              tmp / "dit", tmp / "work-dit")
        built["pixel-uncond"] = _build("pixel-uncond", str(tiny_models.build_pixel_unet(tmp / "uncond-src")), mixed_folder,
                                       tmp / "uncond", tmp / "work-uncond", pooled_train_images=72,
                                       pooled={"expansion": 1, "prune_below": 0.05})
        yield built
    finally:
        patch.undo()


@pytest.mark.parametrize("kind, conditioning", [("sd", "text"), ("sdxl", "text"), ("dit", "class"), ("pixel-uncond", "none")])
def test_every_backbone_becomes_a_release_of_the_datasets_classes(releases, kind, conditioning):
    release = releases[kind]
    info = release.info
    assert info.conditioning == conditioning and release.class_names == CLASSES
    assert info.quality_gate_skipped and "quality_gate" not in {p.name for p in (release.root / "metrics").glob("*")}
    with pytest.raises(FileNotFoundError):
        release.reference_classifier()
    hook, t = release.best_cell.hook, release.best_cell.timestep
    for pooling in ("mean", "none"):
        stats = release.sae(hook=hook, timestep=t, pooling=pooling).feature_stats
        assert stats.labels and all(label == "dead" or label.split(" (")[0] in CLASSES for label in stats.labels)
    assert release.probe().class_names == CLASSES
    measured = release.read_metrics("steering", Steering)
    assert measured is not None, "every build ends with a steering measurement, so the Steer tab starts from it"
    assert measured.steered_cells == [release.best_cell.with_pooling("none")] and set(measured.per_class) == set(CLASSES)
    images, labels = release.held_out_examples()
    assert Counter(labels) == {0: 3, 1: 3, 2: 3}
    side = revelio.load_backbone(release.root / "model" if (release.root / "model").is_dir() else info.backbone).resolution
    thumbnails = release.exemplar_images(stats.top_images.flatten()[:20])
    assert {t.size for t in thumbnails + images if t is not None} == {(min(side, 128),) * 2}, "one thumbnail size for mixed images"


def test_a_hub_backbone_is_referenced_by_id_not_copied(releases):
    release = releases["sd"]
    assert release.info.backbone == "someone/tiny-sd" and not (release.root / "model").exists()
    assert release.backbone(device="cpu").conditioning == "text"
    card = (release.root / "README.md").read_text()
    assert "base_model: someone/tiny-sd" in card and "No quality gate" in card and "reference_classifier/" not in card


def test_a_local_backbone_is_copied_and_the_prompt_template_recorded(releases):
    release = releases["sdxl"]
    assert (release.root / "model" / "model_index.json").is_file()
    assert release.info.prompt_template == "a photo of a {}" and "--prompt-template" in release.info.commands[3]


def test_pooled_saes_can_learn_from_more_images_with_their_own_size_and_no_unused_latents(releases):
    release = releases["pixel-uncond"]
    sae_info = release.info.sae
    assert (sae_info["mean_train_images"], sae_info["mean_expansion"], sae_info["prune_below"]) == (72, 1, 0.05)
    work = release.root.parent / "work-uncond" / "caches"
    assert read_json(work / "pooled-train" / "dataset.json")["num_images"] == 72 and not list((work / "pooled-train").glob("*/t*/none"))
    for hook in release.info.hooks:
        pooled, spatial = (release.sae(hook=hook, timestep=100, pooling=pooling) for pooling in ("mean", "none"))
        assert pooled.d_sae <= pooled.d_in and spatial.d_sae == 2 * spatial.d_in
        training = pooled.config.metrics
        assert pooled.d_sae + training["pruned_latents"] == pooled.d_in
    assert "the pooled ones on 72 training images" in (release.root / "README.md").read_text()


def test_the_dits_own_classes_are_kept_apart_from_the_datasets(releases):
    info = releases["dit"].info
    assert info.backbone_class_names == ["shirt", "sneaker", "bag"] and info.class_names == CLASSES
    assert "not the dataset's" in info.quality_gate_skipped


def test_training_caches_are_class_balanced_subsets_of_a_class_sorted_folder(releases, tmp_path):
    from revelio.storage.files import read_safetensors

    # the SD build's work folder sits beside its release
    labels = read_safetensors(releases["sd"].root.parent / "work-sd" / "caches" / "train" / "labels.safetensors")
    assert labels["labels"].bincount().tolist() == [16, 16, 16]
    assert sorted(labels["dataset_index"].tolist()) == labels["dataset_index"].tolist()


@pytest.mark.parametrize("kind, judge", [("sd", "best probe"), ("pixel-uncond", "best probe")])
def test_steering_is_measured_on_any_release(releases, kind, judge):
    from revelio.release.steering_measurement import SteeringMeasureConfig, measure_steering

    release = releases[kind]
    cell = release.best_cell
    result = measure_steering(SteeringMeasureConfig(release=str(release.root), cells=[cell.spec], features_per_class=2,
                                                    per_source=1, steps=2))
    assert result.judge.startswith(judge) and set(result.per_class) == set(CLASSES)
    per_class = result.per_class.values()
    assert result.mean_success == pytest.approx(sum(c.success for c in per_class) / len(CLASSES))
    assert result.mean_baseline == pytest.approx(sum(c.baseline for c in per_class) / len(CLASSES))
    side = result.side_effect
    assert side.class_steering_mean_abs_pixel_change > 0 and side.unrelated_mean_abs_pixel_change > 0, "clamps change images"
    if kind == "sd":
        assert [s.condition for s in result.sources] == [f"a photo of a {name}" for name in CLASSES]
    else:
        assert [(s.name, s.condition, s.images) for s in result.sources] == [("unconditional", None, 3)]


CONDITIONS = {"sd": "a photo of a brick", "sdxl": "a photo of a cloud", "dit": "sneaker", "pixel-uncond": ""}


@pytest.fixture(scope="module")
def servers(releases, serve_app):
    """The app on each release, on its own port (started once for the module)."""
    return {kind: serve_app(str(release.root)) for kind, release in releases.items()}


@pytest.mark.parametrize("kind", ["sd", "sdxl", "dit", "pixel-uncond"])
def test_the_app_answers_every_endpoint_on_every_kind_of_release(releases, servers, kind, tmp_path):
    from gradio_client import Client, handle_file

    release = releases[kind]
    client = Client(servers[kind], verbose=False, download_files=False)
    images, labels = release.held_out_examples()
    upload = tmp_path / "brick.png"
    images[labels.index(1)].save(upload)
    hook, t = release.best_cell.hook, release.best_cell.timestep
    fvu, _, table, heatmaps, _ = client.predict(handle_file(str(upload)), hook, t, "none", api_name="/explore")
    assert 0 < fvu < 1, "a trained SAE explains part of a held-out image's variance (relative to the held-out mean)"
    assert table["data"] and len(heatmaps) == len(table["data"])
    feature = table["data"][0][0]
    summary, exemplars, _, over_time = client.predict(hook, t, "none", feature, api_name="/feature")
    assert f"#{feature}" in summary and exemplars and len(over_time["data"]) == len(release.timesteps)
    features = client.predict(hook, t, "none", 1, 4, api_name="/suggest_features")
    d_sae = release.sae(hook=hook, timestep=t, pooling="none").d_sae
    assert 0 < len(features) == len(set(features)) <= 4 and all(isinstance(f, int) and 0 <= f < d_sae for f in features)
    baseline, steered, before, after, note = client.predict(
        CONDITIONS[kind], 0, 3, 2.0, hook, t, "none", features, "class-map", 1, 2, 999, 0, api_name="/steer")
    assert Path(baseline["path"]).stat().st_size and Path(steered["path"]).stat().st_size and "Clamped" in note
    assert {c["label"] for c in after["confidences"]} <= set(CLASSES)
    prediction = client.predict(handle_file(str(upload)), hook, t, release.info.best_cell.probe, api_name="/classify")
    assert prediction["label"] in CLASSES
    listed = client.predict(hook, t, "mean", api_name="/features")
    assert listed["headers"][:2] == ["feature", "label"]


@pytest.mark.browser
def test_a_steered_generation_of_the_sd_release_in_a_real_browser(servers, browser):
    """Type a prompt, suggest features, Generate: both images arrive; the screenshot is kept.

    ``browser`` (conftest.py) skips without chromium, and fails instead under REVELIO_REQUIRE_BROWSER=1."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.goto(servers["sd"] + "?tab=steer")
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("a photo of a cloud")
    page.get_by_role("button", name="Suggest features").click()
    page.wait_for_timeout(1500)
    shown = "() => [...document.images].filter(e => e.naturalWidth > 0 && e.offsetParent && e.src.includes('/file=')).length"
    before = page.evaluate(shown)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function(f"({shown})() >= {before + 2}", timeout=90_000)  # baseline and steered arrive
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(500)
    page.screenshot(path=str(SCREENSHOTS / "steer-sd.png"))
    note = page.get_by_text("Clamped at").inner_text()
    page.close()
    assert "Clamped at" in note
