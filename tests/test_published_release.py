"""A release built from published SAEs (not trained here) at a residual-update hook of a tiny SDXL UNet.

SDXL-unbox's SAEs read the residual update of SDXL's ``mid_block.attentions.0`` and
``up_blocks.0.attentions.*``; here one such SAE, pickled the way its code saves one, is converted
once with train/convert_saes.py, becomes a release with ``build_release --saes`` at the hook point
its source says (the residual update), and the app serves it like any other.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import revelio
from revelio.formats.metrics import Steering
from revelio.release.build import build_release
from revelio.release.release_config import UNSET, ReleaseConfig
from revelio.release.steering_measurement import SteeringMeasureConfig
from revelio.steering.selection import value_unit
from revelio.steps.probe_grid import ProbeGridConfig
from tests import tiny_models
from tests.helpers import run

pytestmark = pytest.mark.build
HOOK = "mid_block.attentions.0@residual"
CLASSES = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, str, revelio.KSparseAutoencoder]:
    """An SDXL-unbox checkpoint folder for the SDXL UNet's middle attention block, written the way its
    code saves one (torch.save of the state dict, mean.pt and std.pt), converted once with
    train/convert_saes.py; returns the converted repo folder and the SAE it holds."""
    root = tmp_path_factory.mktemp("published")
    block = root / "checkpoints" / "unet.mid_block.attentions.0_k8_hidden256_auxk16_bs4096_lr0.0001" / "final"
    block.mkdir(parents=True)
    torch.manual_seed(0)
    d_in, d_sae = 64, 256
    encoder = torch.randn(d_sae, d_in) / d_in**0.5
    (block / "config.json").write_text(json.dumps({"n_dirs_local": d_sae, "d_model": d_in, "k": 8, "auxk": 16, "dead_steps_threshold": 2441}))
    state = {"encoder.weight": encoder, "decoder.weight": encoder.T.contiguous(), "pre_bias": torch.zeros(d_in),
             "latent_bias": torch.zeros(d_sae), "stats_last_nonzero": torch.zeros(d_sae, dtype=torch.long)}
    torch.save({"state_dict": state}, block / "state_dict.pth")
    torch.save(torch.rand(d_sae) + 1, block / "mean.pt")
    torch.save(torch.rand(d_sae), block / "std.pt")
    run(sys.executable, "train/convert_saes.py", str(root / "checkpoints"), str(root / "converted"), "--license", "mit")
    subfolder = block.relative_to(root / "checkpoints").as_posix()
    return root / "converted", subfolder, revelio.KSparseAutoencoder.from_pretrained(root / "converted", subfolder=subfolder)


@pytest.fixture(scope="module")
def release(published, make_image_folder, tmp_path_factory) -> revelio.Release:
    tmp = tmp_path_factory.mktemp("published-release")
    colours = {name: tuple(200.0 * (c == channel) for channel in range(3)) for c, name in enumerate(CLASSES)}
    folder = make_image_folder(colours, per_class={"train": 16, "test": 6}, seed=4, noise=25.0)
    repo, subfolder, _ = published
    config = ReleaseConfig(
        model=str(tiny_models.build_sdxl(tmp / "sdxl-src")), out=tmp / "release", dataset=str(folder), work=tmp / "work",
        saes=[f"{repo}:{subfolder}"], timesteps=[100, 500], prompt_template="a photo of a {}",
        train_images=48, test_images=18, random_images=24, held_out_per_class=3,
        probes=ProbeGridConfig(cache=UNSET, out=UNSET, max_train=48, epochs=1),
        steering=SteeringMeasureConfig(cells=[], features_per_class=2, strengths=[2.0], per_source=1, steps=2),
    )
    build_release(config, "test build from published SAEs")
    return revelio.load_release(tmp / "release")


def test_published_saes_become_a_release_at_their_own_hook_point(release, published):
    _, _, original = published
    assert release.hooks == [HOOK] and release.poolings == ["none"] and release.timesteps == [100, 500]
    for t in release.timesteps:
        sae = release.sae(hook=HOOK, timestep=t, pooling="none")
        assert torch.equal(sae.W_enc, original.W_enc) and torch.equal(sae.W_dec, original.W_dec), "the weights are the publisher's"
        assert (sae.config.hook, sae.config.timestep, sae.config.source.format) == (HOOK, t, "sdxl-unbox")
        assert sae.feature_stats.labels and sae.config.metrics["test"]["tokens"] > 0, "described on this data"
    assert set(release.info.probe_kinds) == {"linear", "diff-c"}, "no probe on pooled SAE codes without pooled SAEs"
    measured = release.read_metrics("steering", Steering)
    assert measured is not None and measured.steered_cells == [release.best_cell.with_pooling("none")]
    card = (release.root / "README.md").read_text()
    assert "published ones, not trained here" in card and "sdxl-unbox format" in card and "licence mit" in card
    assert release.info.sae["published"][0]["hook"] == HOOK


def test_the_app_serves_a_release_of_published_saes(release, serve_app, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(serve_app(str(release.root)), verbose=False, download_files=False)
    images, labels = release.held_out_examples()
    upload = tmp_path / "green.png"
    images[labels.index(1)].save(upload)
    t = release.timesteps[0]
    fvu, _, table, heatmaps, _ = client.predict(handle_file(str(upload)), HOOK, t, "none", api_name="/explore")
    assert fvu > 0 and table["data"] and len(heatmaps) == len(table["data"]), "heatmaps of the residual update's features"
    feature = table["data"][0][0]
    summary, _, _, over_time = client.predict(HOOK, t, "none", feature, api_name="/feature")
    assert f"#{feature}" in summary and len(over_time["data"]) == len(release.timesteps)
    baseline, steered, _, after, note = client.predict(
        "a photo of a cloud", 0, 2, 2.0, HOOK, t, "none", [feature], "value", 1, 5.0, 999, 0, api_name="/steer")
    assert Path(baseline["path"]).stat().st_size and Path(steered["path"]).stat().st_size and "Clamped" in note
    prediction = client.predict(handle_file(str(upload)), release.best_cell.hook, release.best_cell.timestep,
                                release.info.best_cell.probe, api_name="/classify")
    assert prediction["label"] in CLASSES


def test_value_clamps_use_the_publishers_typical_activation(release, published):
    """SDXL-unbox's app clamps a feature to strength x mean.pt x k; the Steer tab's value mode does the same."""
    from revelio.app.generation import GenerationService
    from revelio.app.state import AppState, Target
    from revelio.app.steer_request import SteeringRequest

    _, _, original = published
    sae = release.sae(hook=HOOK, timestep=release.timesteps[0], pooling="none")
    torch.testing.assert_close(value_unit(sae), original.typical_activation * original.k)
    request = SteeringRequest(condition="a photo", negative_prompt=None, seed=0, steps=2, guidance=2.0, cell=sae.config.cell,
                              features=[3, 7], strength=2.0, window=(999, 0), clamp_to="value", target=Target(None, 0))
    clamp = GenerationService(AppState(release)).clamp(request)
    assert clamp == {f: pytest.approx(2.0 * float(original.typical_activation[f]) * original.k) for f in (3, 7)}
