"""Foreign SAE files are data, never code: every hostile or broken file is refused with a message
that names it, before anything in it runs or is allocated."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import revelio.interop.files as interop_files
import revelio.interop.sdxl_unbox as sdxl_unbox
from revelio.errors import ArtifactFormatError
from revelio.sae.model import KSparseAutoencoder

ROOT = Path(__file__).resolve().parent.parent


class Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def sparsify_folder(folder: Path, d_in: int = 8, d_sae: int = 16, **cfg) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"encoder.weight": torch.randn(d_sae, d_in), "encoder.bias": torch.zeros(d_sae), "W_dec": torch.randn(d_sae, d_in),
               "b_dec": torch.zeros(d_in)}, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"num_latents": d_sae, "k": 4, "d_in": d_in, **cfg}))
    return folder


def convert(source: Path, out: Path) -> list[Path]:
    spec = importlib.util.spec_from_file_location("convert_saes", ROOT / "train" / "convert_saes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["convert_saes"] = module
    spec.loader.exec_module(module)
    return module.main([str(source), str(out)])


def test_a_pickle_renamed_safetensors_is_refused_unopened(tmp_path):
    folder = sparsify_folder(tmp_path / "sae")
    torch.save({"encoder.weight": Payload(tmp_path / "ran")}, folder / "sae.safetensors")
    with pytest.raises(ArtifactFormatError, match=r"sae\.safetensors looks like a pickle"):
        KSparseAutoencoder.from_pretrained(folder)
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("name", ["state_dict.pth", "mean.pt"])
def test_pickled_code_in_a_conversion_is_refused_by_weights_only(tmp_path, name):
    block = tmp_path / "unet.mid_block.attentions.0_k4"
    block.mkdir()
    (block / "config.json").write_text(json.dumps({"n_dirs_local": 16, "d_model": 8, "k": 4, "auxk": None, "dead_steps_threshold": 1}))
    state = {"encoder.weight": torch.randn(16, 8), "decoder.weight": torch.randn(8, 16), "pre_bias": torch.zeros(8), "latent_bias": torch.zeros(16)}
    torch.save({"state_dict": state}, block / "state_dict.pth")
    torch.save(Payload(tmp_path / "ran") if name == "mean.pt" else {"state_dict": {**state, "x": Payload(tmp_path / "ran")}}, block / name)
    with pytest.raises(ArtifactFormatError, match=f"{name} cannot be read as weights only"):
        convert(tmp_path, tmp_path / "out")
    assert not (tmp_path / "ran").exists()


def test_from_pretrained_never_opens_a_pickle(tmp_path):
    block = tmp_path / "block"
    block.mkdir()
    (block / "config.json").write_text("{}")
    torch.save({"x": Payload(tmp_path / "ran")}, block / "state_dict.pth")
    torch.save({"x": Payload(tmp_path / "ran")}, tmp_path / "sae.pt")
    with pytest.raises(ArtifactFormatError, match="SDXL-unbox folder.*never opens.*convert_saes.py"):
        KSparseAutoencoder.from_pretrained(block)
    with pytest.raises(ArtifactFormatError, match="is a file.*convert_saes.py"):
        KSparseAutoencoder.from_pretrained(tmp_path / "sae.pt")
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(("writer", "cfg"), [
    ("sparsify", {"num_latents": 10**12}),
    ("sparsify", {"num_latents": 0, "expansion_factor": 10**9}),
    ("saelens", {"d_sae": 10**12}),
    ("sdxl-unbox", {"n_dirs_local": 10**12}),
])
def test_absurd_sizes_are_refused_before_any_weight_is_read(tmp_path, monkeypatch, writer, cfg):
    def never(*args, **kwargs):
        raise AssertionError("a weights file was opened")

    for module, name in ((interop_files, "read_safetensors"), (interop_files, "safetensors_header"), (sdxl_unbox, "load_weights_only")):
        monkeypatch.setattr(module, name, never)
    folder = tmp_path / "sae"
    folder.mkdir()
    if writer == "sdxl-unbox":
        (folder / "config.json").write_text(json.dumps({"n_dirs_local": 16, "d_model": 8, "k": 4, **cfg}))
        (folder / "state_dict.pth").write_bytes(b"never read")
        with pytest.raises(ArtifactFormatError, match=r"config\.json: SAE sizes .* over the limit"):
            convert(folder, tmp_path / "out")
        return
    weights = "sae.safetensors" if writer == "sparsify" else "sae_weights.safetensors"
    (folder / weights).write_bytes(b"never read")
    base = {"d_in": 8, "k": 4, "architecture": "topk", "d_sae": 16} if writer == "saelens" else {"d_in": 8, "k": 4}
    (folder / "cfg.json").write_text(json.dumps({**base, **cfg}))
    with pytest.raises(ArtifactFormatError, match=r"cfg\.json: SAE sizes .* over the limit"):
        KSparseAutoencoder.from_pretrained(folder)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, bad):
    folder = sparsify_folder(tmp_path / "sae")
    tensors = {"encoder.weight": torch.randn(16, 8), "encoder.bias": torch.zeros(16), "W_dec": torch.randn(16, 8), "b_dec": torch.zeros(8)}
    tensors["W_dec"][3, 2] = bad
    save_file(tensors, str(folder / "sae.safetensors"))
    with pytest.raises(ArtifactFormatError, match=r"sae\.safetensors: W_dec holds NaN or infinite values"):
        KSparseAutoencoder.from_pretrained(folder)


def test_mismatched_shapes_and_tensors_are_refused_from_the_header(tmp_path):
    folder = sparsify_folder(tmp_path / "sae")
    save_file({"encoder.weight": torch.randn(16, 8), "encoder.bias": torch.zeros(16), "W_dec": torch.randn(8, 16), "b_dec": torch.zeros(8)},
              str(folder / "sae.safetensors"))
    with pytest.raises(ArtifactFormatError, match=r"sae\.safetensors: W_dec has shape \[8, 16\]; its config implies \[16, 8\]"):
        KSparseAutoencoder.from_pretrained(folder)
    save_file({"encoder.weight": torch.randn(16, 8), "W_dec": torch.randn(16, 8), "b_dec": torch.zeros(8), "W_skip": torch.zeros(8, 8)},
              str(folder / "sae.safetensors"))
    with pytest.raises(ArtifactFormatError, match=r"missing \['encoder.bias'\], unexpected \['W_skip'\]"):
        KSparseAutoencoder.from_pretrained(folder)
    save_file({"encoder.weight": torch.zeros(16, 8, dtype=torch.int32), "encoder.bias": torch.zeros(16), "W_dec": torch.randn(16, 8),
               "b_dec": torch.zeros(8)}, str(folder / "sae.safetensors"))
    with pytest.raises(ArtifactFormatError, match="encoder.weight is I32"):
        KSparseAutoencoder.from_pretrained(folder)


@pytest.mark.parametrize(("cfg", "message"), [
    ({"k": "32"}, "'k' must be a int"),
    ({"k": 99}, r"k must be in 1\.\.d_sae"),
    ({"activation": "groupmax"}, "activation = 'groupmax' is not supported"),
    ({"transcode": True}, "transcode = True is not supported"),
])
def test_malformed_configs_name_the_file_and_the_field(tmp_path, cfg, message):
    folder = sparsify_folder(tmp_path / "sae", **cfg)
    with pytest.raises(ArtifactFormatError, match=rf"cfg\.json.*{message}"):
        KSparseAutoencoder.from_pretrained(folder)


@pytest.mark.parametrize("subfolder", ["../outside", "sae/../../outside", "/etc", "..\\outside"])
def test_a_subfolder_cannot_leave_the_repo(tmp_path, subfolder):
    sparsify_folder(tmp_path / "outside")
    (tmp_path / "repo" / "sae").mkdir(parents=True)
    with pytest.raises(ArtifactFormatError, match="leaves the folder"):
        KSparseAutoencoder.from_pretrained(tmp_path / "repo", subfolder=subfolder)


def test_symlinks_out_of_the_folder_are_refused(tmp_path):
    outside = sparsify_folder(tmp_path / "outside")
    (tmp_path / "repo").mkdir()
    os.symlink(outside, tmp_path / "repo" / "linked_dir")
    with pytest.raises(ArtifactFormatError, match="outside"):
        KSparseAutoencoder.from_pretrained(tmp_path / "repo", subfolder="linked_dir")
    inside = sparsify_folder(tmp_path / "repo" / "sae")
    (inside / "sae.safetensors").unlink()
    os.symlink(outside / "sae.safetensors", inside / "sae.safetensors")
    with pytest.raises(ArtifactFormatError, match=r"sae\.safetensors is a symlink to .*outside"):
        KSparseAutoencoder.from_pretrained(tmp_path / "repo", subfolder="sae")


def test_a_revelio_config_cannot_list_files_outside_its_folder(tmp_path):
    sae = KSparseAutoencoder(8, 16, 4)
    folder = sae.save_pretrained(tmp_path / "sae")
    config = json.loads((folder / "config.json").read_text())
    config["sha256"]["../../secret.safetensors"] = "0" * 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactFormatError, match="leaves the folder"):
        KSparseAutoencoder.from_pretrained(folder)


def test_hub_cache_symlinks_into_blobs_still_load(tmp_path):
    repo = tmp_path / "hub" / "models--org--name"
    snapshot = repo / "snapshots" / ("a" * 40) / "sae"
    blob = sparsify_folder(repo / "blobs")
    snapshot.mkdir(parents=True)
    for name in ("cfg.json", "sae.safetensors"):
        os.symlink(blob / name, snapshot / name)
    assert KSparseAutoencoder.from_pretrained(snapshot.parent, subfolder="sae").d_sae == 16
