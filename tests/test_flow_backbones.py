"""FLUX, SD3 and PixArt-Sigma backbones on tiny random-weight pipelines built from configs.

Each test checks a place where a quiet bug would give meaningless features while every shape
still fits: flow-matching noising and the timestep the denoiser is given, the image stream (not
the prompt's) at joint blocks, packed tokens on the image grid, steering put back in its place.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

import revelio
from revelio.activations.hooks import forward_timestep
from revelio.analysis.queries import feature_heatmap
from revelio.errors import ConfigError
from revelio.models import FluxBackbone, PixArtBackbone, SD3Backbone
from revelio.models.flux import pack_latents, unpack_latents
from revelio.sae import KSparseAutoencoder
from revelio.steering import steer
from tests import tiny_models
from tests.leaks import count_forward_hooks

IMAGES = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]


@pytest.fixture(scope="module")
def flow_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flow-models")
    return {
        "flux": tiny_models.build_flux(root / "flux"),
        "flux-dev": tiny_models.build_flux(root / "flux-dev", guidance_embeds=True),
        "sd3": tiny_models.build_sd3(root / "sd3"),
        "pixart": tiny_models.build_pixart_sigma(root / "pixart"),
    }


@pytest.fixture(scope="module")
def bbs(flow_dirs: dict[str, Path]) -> dict[str, revelio.Backbone]:
    return {kind: revelio.load_backbone(path, device="cpu") for kind, path in flow_dirs.items()}


def _noisy(bb: revelio.Backbone, t: int) -> torch.Tensor:
    x0 = bb.encode_images(IMAGES)
    return bb.add_noise(x0, t, noise=bb.noise_like(x0, 0))


def _raw_outputs(bb: revelio.Backbone, module: str, t: int) -> tuple[tuple, dict]:
    """A block's raw (args, kwargs) and output tuple in one denoiser forward, seen by a hook of our own."""
    seen: dict = {}

    def record(_module, args, kwargs, output):
        seen.update(kwargs=kwargs, output=output)

    handle = bb.denoiser.get_submodule(module).register_forward_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            bb.denoise(_noisy(bb, t), t)
    finally:
        handle.remove()
    return seen["kwargs"], seen["output"]


@pytest.mark.parametrize(("kind", "cls", "hooks", "steps", "guidance"), [
    ("flux", FluxBackbone, ["transformer_blocks.0", "transformer_blocks.1", "single_transformer_blocks.0", "single_transformer_blocks.1"], 4, 0.0),
    ("flux-dev", FluxBackbone, None, 28, 3.5),
    ("sd3", SD3Backbone, ["transformer_blocks.0", "transformer_blocks.1"], 28, 7.0),
    ("pixart", PixArtBackbone, ["transformer_blocks.0", "transformer_blocks.1"], 20, 4.5),
])
def test_load_backbone_picks_the_family_and_its_defaults(bbs, kind, cls, hooks, steps, guidance):
    bb = bbs[kind]
    assert type(bb) is cls and bb.conditioning == "text"
    assert hooks is None or bb.hook_points == hooks
    assert (bb.resolution, bb.token_grid) == (32, (4, 4))
    assert (bb.default_num_inference_steps, bb.default_guidance_scale) == (steps, guidance)
    assert set(bb.hook_channels.values()) == {16}
    assert cls.cuda_dtype == (torch.bfloat16 if cls is FluxBackbone else torch.float16)  # FLUX overflows float16


@pytest.mark.parametrize("kind", ["flux", "sd3"])
def test_noising_is_the_schedulers_own_scale_noise(bbs, kind):
    """At every whole-number timestep of the scheduler's own training grid (SD3's is shifted by 3)."""
    bb = bbs[kind]
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(bb.pipeline.scheduler.config)
    whole = [int(t) for t in scheduler.timesteps if float(t).is_integer() and t < 1000]
    picked = whole[:: max(1, len(whole) // 6)]
    assert len(picked) >= 3, whole
    x0 = bb.encode_images(IMAGES)
    noise = bb.noise_like(x0, [1, 2])
    for t in picked:
        expected = scheduler.scale_noise(x0, torch.tensor([float(t)] * 2), noise)
        torch.testing.assert_close(bb.add_noise(x0, t, noise=noise), expected, atol=1e-6, rtol=1e-6)


def test_dynamic_shifting_keeps_timestep_and_sigma_together(bbs):
    """FLUX.1-dev's resolution-dependent shift moves the sampler's sigmas, but at each of its
    timesteps the scheduler noises with sigma = timestep / 1000: the naming revelio relies on."""
    bb = bbs["flux-dev"]
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(bb.pipeline.scheduler.config)
    scheduler.set_timesteps(4, mu=1.1)
    x0 = bb.encode_images(IMAGES[:1])
    noise = bb.noise_like(x0, 3)
    for t in scheduler.timesteps:
        sigma = float(t) / 1000
        torch.testing.assert_close(scheduler.scale_noise(x0, t[None], noise), sigma * noise + (1 - sigma) * x0)


def test_ddpm_family_noising_stays_for_pixart(bbs):
    bb = bbs["pixart"]
    x0, noise = bb.encode_images(IMAGES), torch.randn(2, 4, 8, 8)
    abar = bb.noise_schedule.alphas_cumprod[400]
    torch.testing.assert_close(bb.add_noise(x0, 400, noise=noise), abar.sqrt() * x0 + (1 - abar).sqrt() * noise)


@pytest.mark.parametrize(("kind", "given"), [("flux", 0.25), ("flux-dev", 0.25), ("sd3", 250.0), ("pixart", 250)])
def test_denoiser_gets_the_timestep_it_expects(bbs, kind, given):
    """FLUX takes sigma (and scales it by 1000 inside), SD3 1000 sigma, PixArt the DDPM step; steering
    windows see 250 on all of them."""
    bb = bbs[kind]
    seen = {}

    def record(_module, args, kwargs):
        seen.update(raw=kwargs["timestep"], read=forward_timestep(args, kwargs))

    handle = bb.denoiser.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            bb.denoise(_noisy(bb, 250), 250)
    finally:
        handle.remove()
    assert seen["raw"].tolist() == [given] * 2
    assert seen["read"].tolist() == [250] * 2


@pytest.mark.parametrize(("kind", "hook"), [
    ("flux", "transformer_blocks.0"), ("flux", "single_transformer_blocks.1"), ("sd3", "transformer_blocks.0"), ("sd3", "transformer_blocks.1"),
])
def test_extraction_reads_the_image_stream(bbs, kind, hook):
    """The block returns (text, image); extraction gives the image tokens. On FLUX both streams have 16
    tokens of 16 channels, so only the values tell them apart (SD3's last block returns no text at all)."""
    bb = bbs[kind]
    acts = revelio.extract(bb, IMAGES, [hook], [300], pooling="none", seed=0)[(hook, 300)]
    _, (text, image) = _raw_outputs(bb, hook, 300)
    torch.testing.assert_close(acts, image)
    if text is not None:
        assert text.shape == image.shape if kind == "flux" else True
        assert not torch.allclose(acts, text[:, : acts.shape[1]])
    pooled = revelio.extract(bb, IMAGES, [hook], [300], pooling="mean", seed=0)[(hook, 300)]
    torch.testing.assert_close(pooled, image.mean(1))


def test_residual_update_of_a_single_stream_block_is_the_image_streams(bbs):
    bb = bbs["flux"]
    hook = "single_transformer_blocks.0"
    got = revelio.extract(bb, IMAGES, [f"{hook}@residual"], [600], pooling="none")[(f"{hook}@residual", 600)]
    kwargs, (_, image) = _raw_outputs(bb, hook, 600)
    torch.testing.assert_close(got, image - kwargs["hidden_states"])


def test_hook_points_on_the_text_stream_are_refused(bbs):
    bb = bbs["flux"]
    for spec in ("transformer_blocks.0.ff_context", "transformer_blocks.1.attn.add_k_proj", "single_transformer_blocks.0.attn",
                 "transformer.single_transformer_blocks.1.proj_out"):
        with pytest.raises(ConfigError, match="image stream"):
            bb.check_hook_points([spec])
    assert bb.check_hook_points(["transformer.transformer_blocks.0.ff", "transformer_blocks.1.attn"]) == [
        "transformer_blocks.0.ff", "transformer_blocks.1.attn"]
    with pytest.raises(ConfigError, match="image stream"):
        bbs["sd3"].check_hook_points(["transformer_blocks.0.ff_context"])


def test_packed_tokens_are_the_image_grid_row_major(bbs):
    latents = torch.randn(2, 4, 8, 8)
    tokens = pack_latents(latents)
    torch.testing.assert_close(tokens, FluxPipeline._pack_latents(latents, 2, 4, 8, 8))
    torch.testing.assert_close(unpack_latents(tokens, 8, 8), latents)
    # token (row 1, column 2) is the 2x2 latent patch at rows 2-3, columns 4-5
    torch.testing.assert_close(tokens[:, 1 * 4 + 2].view(2, 4, 2, 2), latents[:, :, 2:4, 4:6])


@pytest.mark.parametrize("kind", ["flux", "sd3", "pixart"])
def test_heatmaps_have_the_image_grids_shape(bbs, kind):
    bb = bbs[kind]
    hook = bb.hook_points[-1]
    tokens = revelio.extract(bb, IMAGES[:1], [hook], [500], pooling="none")[(hook, 500)]
    side = bb.resolution // bb.pixels_per_token
    sae = KSparseAutoencoder(bb.hook_channels[hook], 32, 4)
    assert tuple(feature_heatmap(sae, tokens[0], 0, side).shape) == bb.token_grid == (side, side)


@pytest.mark.parametrize(("kind", "hook"), [("flux", "single_transformer_blocks.1"), ("flux", "transformer_blocks.1"),
                                            ("sd3", "transformer_blocks.1"), ("pixart", "transformer_blocks.1")])
def test_steering_changes_the_image_stream_in_its_place(bbs, kind, hook):
    """A clamp masked to the top-left quadrant: after the last block every layer works token by token, so
    the velocity changes there and only there (an edit of the text stream would change nothing). At an
    earlier block attention spreads the change, which must still reach the prediction."""
    bb = bbs[kind]
    torch.manual_seed(0)
    sae = KSparseAutoencoder(bb.hook_channels[hook], 32, 4, hook=hook, pooling="none")
    mask = torch.zeros(4, 4)
    mask[:2, :2] = 1.0
    x_t = _noisy(bb, 500)
    with torch.no_grad():
        before = bb.denoise(x_t, 500)
        with steer(bb, sae, clamp={3: 20.0}, mask=mask):
            after = bb.denoise(x_t, 500)
    assert count_forward_hooks(bb.denoiser) == 0
    changed = (after - before).abs().amax(dim=(0, 1)) > 1e-6  # latent grid [8, 8]
    assert changed[:4, :4].any()
    last = hook == bb.hook_points[-1]
    assert not changed[4:, :].any() and not changed[:, 4:].any() if last else changed[4:, 4:].any()


def test_steering_windows_are_named_in_revelio_timesteps_on_flux(bbs):
    """FLUX.1-schnell's 2-step schedule visits sigma 1.0 and 0.5 (timesteps 1000 and 500); the
    pure-noise step counts as 999, the top of the grid. Each window steers the steps inside it."""
    bb = bbs["flux"]
    hook = "single_transformer_blocks.1"
    torch.manual_seed(0)
    sae = KSparseAutoencoder(16, 32, 4, hook=hook, pooling="none")
    base = bb.generate("a cat", seed=0, num_inference_steps=2, output_type="pt")
    images = {}
    for window in [(600, 400), (300, 100), (999, 900)]:
        with steer(bb, sae, clamp={3: 20.0}, timesteps=window):
            images[window] = bb.generate("a cat", seed=0, num_inference_steps=2, output_type="pt")
    assert not torch.allclose(images[(600, 400)], base) and not torch.allclose(images[(999, 900)], base)
    assert not torch.allclose(images[(600, 400)], images[(999, 900)])
    torch.testing.assert_close(images[(300, 100)], base)


def test_flux_generation_prompts_guidance_and_negative_prompts(bbs):
    bb = bbs["flux"]
    both = bb.generate(["a cat", "a dog"], seed=4, num_inference_steps=2, output_type="pt")
    alone = bb.generate("a dog", seed=5, num_inference_steps=2, output_type="pt")
    assert both.shape == (2, 3, 32, 32)
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=1e-4)
    guided = bb.generate("a cat", seed=4, num_inference_steps=2, guidance_scale=3.0, negative_prompt="a dog", output_type="pt")
    assert not torch.allclose(guided, both[:1])
    with pytest.raises(ConfigError, match="guidance_scale > 1"):
        bb.generate("a cat", negative_prompt="a dog", num_inference_steps=1)
    with pytest.raises(ConfigError, match="no negative prompt"):
        bbs["flux-dev"].generate("a cat", negative_prompt="a dog", num_inference_steps=1)
    assert len(bbs["flux-dev"].generate("a cat", num_inference_steps=1)) == 1


@pytest.mark.parametrize("kind", ["sd3", "pixart"])
def test_cfg_models_generate_with_negative_prompts(bbs, kind):
    bb = bbs[kind]
    plain = bb.generate("a cat", seed=0, num_inference_steps=2, output_type="pt")
    negative = bb.generate("a cat", seed=0, num_inference_steps=2, negative_prompt="a red car", output_type="pt")
    assert plain.shape == (1, 3, 32, 32) and not torch.allclose(plain, negative)
    assert bb.generate("a cat", seed=0, num_inference_steps=2, output_type="pil")[0].size == (32, 32)


def test_prompts_condition_extraction(bbs):
    bb = bbs["flux"]
    hook = "transformer_blocks.1"
    cat, dog = (revelio.extract(bb, IMAGES, [hook], [500], condition=p)[(hook, 500)] for p in ("a cat", "a dog"))
    mixed = revelio.extract(bb, IMAGES, [hook], [500], condition=["a cat", "a dog"])[(hook, 500)]
    assert not torch.allclose(cat, dog)
    torch.testing.assert_close(mixed, torch.stack([cat[0], dog[1]]))


def test_a_bad_resolution_is_refused(flow_dirs, tmp_path):
    import json
    import shutil

    folder = shutil.copytree(flow_dirs["flux"], tmp_path / "flux")
    (folder / "revelio.json").write_text(json.dumps({"resolution": 36}))
    with pytest.raises(ConfigError, match="multiple of 8"):
        revelio.load_backbone(folder, device="cpu")


# --- A release of the tiny FLUX, built end to end and served -------------------------------------------------

CLASSES = ["apple", "brick", "cloud"]


@pytest.fixture(scope="module")
def flux_release(flow_dirs, make_image_folder, tmp_path_factory) -> revelio.Release:
    from revelio.release.build import build_release
    from revelio.release.release_config import UNSET, ReleaseConfig
    from revelio.release.steering_measurement import SteeringMeasureConfig
    from revelio.sae.training import SAETrainConfig
    from revelio.steps.probe_grid import ProbeGridConfig
    from revelio.steps.quality_gate import QualityGateConfig

    colours = {name: tuple(200.0 * (c == channel) for channel in range(3)) for c, name in enumerate(CLASSES)}
    folder = make_image_folder(colours, per_class={"train": 16, "test": 6}, seed=5, noise=25.0, sizes=((32, 32), (24, 40)))
    tmp = tmp_path_factory.mktemp("flux-release")
    sae = {"expansion": 2, "k": 4, "batch_size": 32}
    config = ReleaseConfig(
        model=str(flow_dirs["flux"]), out=tmp / "release", dataset=str(folder), hooks=["transformer_blocks.1", "single_transformer_blocks.1"],
        timesteps=[250, 750], train_images=36, test_images=12, random_images=12, held_out_per_class=2,
        pooled_sae=SAETrainConfig(**sae, total_tokens=300), spatial_sae=SAETrainConfig(**sae, total_tokens=1200),
        probes=ProbeGridConfig(cache=UNSET, out=UNSET, max_train=36, epochs=1),
        gate=QualityGateConfig(model="", out=UNSET, per_class=2, epochs=1),
        steering=SteeringMeasureConfig(cells=[], features_per_class=2, strengths=[2.0], per_source=1, steps=2),
        work=tmp / "work", prompt_template="a photo of a {}",
    )
    build_release(config, "test build of a FLUX release")
    return revelio.load_release(tmp / "release")


@pytest.mark.build
def test_a_flux_release_is_built_end_to_end(flux_release):
    release = flux_release
    assert release.class_names == CLASSES and release.info.conditioning == "text"
    assert release.info.noising == "flow-matching" and "sigma = t/1000" in (release.root / "README.md").read_text()
    assert release.info.hooks == ["transformer_blocks.1", "single_transformer_blocks.1"] and release.timesteps == [250, 750]
    for hook in release.info.hooks:
        spatial = release.sae(hook=hook, timestep=250, pooling="none")
        assert spatial.d_in == 16 and spatial.feature_stats.labels
    assert release.probe().class_names == CLASSES
    diffc = release.probe(hook="single_transformer_blocks.1", timestep=250, kind="diff-c")  # on the unpacked 4x4 token grid
    assert diffc.config.grid_side == 4 and diffc.class_names == CLASSES
    assert (release.root / "model" / "model_index.json").is_file() and release.backbone(device="cpu").hook_points[-1] == "single_transformer_blocks.1"


@pytest.mark.build
@pytest.mark.slow
def test_the_app_answers_on_a_flux_release(flux_release, serve_app, tmp_path):
    from gradio_client import Client, handle_file

    release = flux_release
    client = Client(serve_app(str(release.root)), verbose=False, download_files=False)
    images, labels = release.held_out_examples()
    upload = tmp_path / "brick.png"
    images[labels.index(1)].save(upload)
    hook, t = release.best_cell.hook, release.best_cell.timestep
    _, _, table, heatmaps, _ = client.predict(handle_file(str(upload)), hook, t, "none", api_name="/explore")
    assert table["data"] and len(heatmaps) == len(table["data"])
    features = client.predict(hook, t, "none", 1, 4, api_name="/suggest_features")
    baseline, steered, _, _, note = client.predict(
        "a photo of a brick", 0, 2, 0.0, hook, t, "none", features, "class-map", 1, 2, 999, 0, api_name="/steer")
    assert Path(baseline["path"]).stat().st_size and Path(steered["path"]).stat().st_size and "Clamped" in note
    assert client.predict(handle_file(str(upload)), hook, t, release.info.best_cell.probe, api_name="/classify")["label"] in CLASSES


@pytest.mark.build
@pytest.mark.browser
def test_a_prompt_steered_on_a_flux_release_in_a_real_browser(flux_release, serve_app, browser):
    """Type a prompt, suggest features, Generate on the FLUX release: both images arrive (screenshot kept)."""
    from tests.helpers import SCREENSHOTS, generate_and_wait

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.goto(serve_app(str(flux_release.root)) + "?tab=steer")
    page.get_by_label("Prompt", exact=True).fill("a photo of a brick")
    page.get_by_role("button", name="Suggest features").click()
    page.wait_for_timeout(1500)
    generate_and_wait(page, 90_000)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOTS / "steer-flux.png"))
    note = page.get_by_text("Clamped at").inner_text()
    page.close()
    assert "Clamped at single_transformer_blocks.1" in note or "Clamped at transformer_blocks.1" in note
