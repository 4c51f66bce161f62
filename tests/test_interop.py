"""Published SAE formats in and out: each checkpoint, written the way its project writes it, loads
(or converts) and encodes and decodes as a reference implementation of that project's equations;
revelio -> sparsify -> revelio and revelio -> SAELens -> revelio are bit-equal."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from revelio.sae.model import KSparseAutoencoder
from revelio.steering.edits import kept_values

ROOT = Path(__file__).resolve().parent.parent
D_SAE, K = 128, 8


def _script(name: str):
    """train/ is a folder of scripts, not a package: load one as a module to call its main()."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def tokens(d_in: int, seed: int = 0) -> torch.Tensor:
    """[2, 16, d_in]: channels-last tokens of two 4x4 maps, like a tiny SD attention block's output."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 16, d_in, generator=g) * 3 + 1


def weights(d_in: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dec = torch.randn(D_SAE, d_in, generator=g)
    return {"enc": torch.randn(D_SAE, d_in, generator=g) / d_in**0.5, "enc_b": torch.randn(D_SAE, generator=g) * 0.1,
            "dec": dec / dec.norm(dim=1, keepdim=True), "b_dec": torch.randn(d_in, generator=g) * 0.5}


def scatter(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return torch.zeros(*values.shape[:-1], D_SAE).scatter(-1, indices, values)


def standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mean = x.mean(-1, keepdim=True)
    std = (x - mean).std(-1, keepdim=True)
    return (x - mean) / (std + 1e-5), mean, std


# --- reference implementations of each project's equations ----------------------------------------
def sparsify_reference(w, x, unit_norm=False):
    """sparsify / SAeUron: topk(relu(encoder(x - b_dec))); codes @ W_dec + b_dec; SAeUron standardises."""
    inp, mean, std = standardise(x) if unit_norm else (x, None, None)
    codes = scatter(*torch.relu((inp - w["b_dec"]) @ w["enc"].T + w["enc_b"]).topk(K, dim=-1))
    recon = codes @ w["dec"] + w["b_dec"]
    return codes, recon * std + mean if unit_norm else recon


def saelens_reference(w, x, layer_norm=False, apply_b_dec=True, rescale=False):
    """SAELens TopKSAE: relu(topk((norm(x) - b_dec) @ W_enc + b_enc)); decode, de-normalise."""
    inp, mean, std = standardise(x) if layer_norm else (x, None, None)
    pre = (inp - w["b_dec"] * apply_b_dec) @ w["enc"].T + w["enc_b"]
    norms = w["dec"].norm(dim=-1)
    if rescale:
        pre = pre * norms
    values, indices = pre.topk(K, dim=-1)
    codes = scatter(values.relu(), indices)
    recon = (codes / norms if rescale else codes) @ w["dec"] + w["b_dec"]
    return codes, recon * std + mean if layer_norm else recon


def unbox_reference(w, x):
    """SDXL-unbox: relu(topk(encoder(x - pre_bias) + latent_bias)); decoder(codes) + pre_bias."""
    values, indices = ((x - w["b_dec"]) @ w["enc"].T + w["enc_b"]).topk(K, dim=-1)
    codes = scatter(values.relu(), indices)
    return codes, codes @ w["dec"] + w["b_dec"]


def paper_reference(w, x):
    """The paper's SD-kSAE: topk((x - b_dec) @ W_enc + b_enc), no ReLU; codes @ W_dec + b_dec."""
    codes = scatter(*((x - w["b_dec"]) @ w["enc"].T + w["enc_b"]).topk(K, dim=-1))
    return codes, codes @ w["dec"] + w["b_dec"]


def assert_same_sae(sae: KSparseAutoencoder, reference, x: torch.Tensor) -> None:
    codes, recon = reference
    code = sae.encode(x)
    torch.testing.assert_close(code.to_dense(D_SAE), codes, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.decode(code), recon, rtol=1e-5, atol=1e-4)


# --- writers of each documented layout ---------------------------------------------------------------
def write_sparsify(folder: Path, w, d_in: int, **cfg) -> Path:
    folder.mkdir(parents=True)
    save_file({"encoder.weight": w["enc"], "encoder.bias": w["enc_b"], "W_dec": w["dec"], "b_dec": w["b_dec"]}, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"expansion_factor": 4, "normalize_decoder": True, "num_latents": D_SAE, "k": K,
                                                 "multi_topk": False, "d_in": d_in, **cfg}))
    return folder


def write_saelens(folder: Path, w, d_in: int, **cfg) -> Path:
    folder.mkdir(parents=True)
    save_file({"W_enc": w["enc"].T.contiguous(), "b_enc": w["enc_b"], "W_dec": w["dec"], "b_dec": w["b_dec"]}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_in": d_in, "d_sae": D_SAE, "k": K, "dtype": "float32",
                                                 "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
                                                 "reshape_activations": "none", "rescale_acts_by_decoder_norm": False,
                                                 "metadata": {"sae_lens_version": "6.5.0", "hook_name": "unet.mid_block.attentions.0"}, **cfg}))
    return folder


@pytest.mark.parametrize("d_in", [32, 64])
def test_sparsify_folder_loads_and_encodes_as_sparsify(tmp_path, d_in):
    w, x = weights(d_in), tokens(d_in)
    folder = write_sparsify(tmp_path / "unet.up_blocks.1.attentions.1", w, d_in)
    sae = KSparseAutoencoder.from_pretrained(tmp_path, subfolder="unet.up_blocks.1.attentions.1")
    assert_same_sae(sae, sparsify_reference(w, x), x)
    assert sae.config.hook == "unet.up_blocks.1.attentions.1" and sae.config.source.format == "sparsify"
    assert KSparseAutoencoder.from_pretrained(folder).config.hook == "unet.up_blocks.1.attentions.1"


def test_saeuron_folder_standardises_each_input_and_runs_batch_topk_as_topk(tmp_path):
    w, x = weights(32), tokens(32)
    write_sparsify(tmp_path / "run" / "unet.up_blocks.1.attentions.2", w, 32, batch_topk=True, sample_topk=False, input_unit_norm=True)
    (tmp_path / "run" / "README.md").write_text("---\nlicense: mit\n---\nSAeUron\n")
    sae = KSparseAutoencoder.from_pretrained(tmp_path / "run", subfolder="unet.up_blocks.1.attentions.2")
    assert sae.config.input_normalization == "unit_norm" and sae.config.source.license == "mit"
    assert_same_sae(sae, sparsify_reference(w, x, unit_norm=True), x)


def test_sparsify_checkpoint_written_by_eai_sparsify(tmp_path):
    sparsify = pytest.importorskip("sparsify")
    coder = sparsify.SparseCoder(64, sparsify.SparseCoderConfig(num_latents=D_SAE, k=K))
    with torch.no_grad():
        coder.encoder.bias.normal_()
        coder.b_dec.normal_()
    coder.save_to_disk(tmp_path / "unet.mid_block.attentions.0")
    w = {"enc": coder.encoder.weight.detach(), "enc_b": coder.encoder.bias.detach(), "dec": coder.W_dec.detach(), "b_dec": coder.b_dec.detach()}
    x = tokens(64).reshape(-1, 64)
    sae = KSparseAutoencoder.from_pretrained(tmp_path, subfolder="unet.mid_block.attentions.0")
    assert_same_sae(sae, sparsify_reference(w, x), x)
    theirs = coder.encode(x)
    torch.testing.assert_close(sae.encode(x, dense=True), scatter(theirs.top_acts, theirs.top_indices))


@pytest.mark.parametrize(("d_in", "extra"), [(32, {}), (64, {"normalize_activations": "layer_norm", "apply_b_dec_to_input": False})])
def test_saelens_topk_folder_loads_and_encodes_as_saelens(tmp_path, d_in, extra):
    w, x = weights(d_in), tokens(d_in)
    write_saelens(tmp_path / "sae", w, d_in, **extra)
    sae = KSparseAutoencoder.from_pretrained(tmp_path / "sae")
    assert sae.config.hook == "unet.mid_block.attentions.0" and sae.config.source.format == "saelens"
    assert_same_sae(sae, saelens_reference(w, x, layer_norm=bool(extra), apply_b_dec=not extra), x)


def test_saelens_decoder_norm_rescaling_is_folded_exactly_enough(tmp_path):
    w, x = weights(32), tokens(32)
    w["dec"] = w["dec"] * torch.linspace(0.5, 2, D_SAE)[:, None]
    write_saelens(tmp_path / "sae", w, 32, rescale_acts_by_decoder_norm=True)
    assert_same_sae(KSparseAutoencoder.from_pretrained(tmp_path / "sae"), saelens_reference(w, x, rescale=True), x)


def test_saelens_checkpoint_written_by_sae_lens(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens.saes.sae import SAEMetadata

    theirs = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=32, d_sae=D_SAE, k=K, normalize_activations="layer_norm",
                                                     metadata=SAEMetadata(hook_name="unet.up_blocks.1.attentions.1")))
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_()
    theirs.save_model(tmp_path / "sae")
    x = tokens(32).reshape(-1, 32)
    sae = KSparseAutoencoder.from_pretrained(tmp_path / "sae")
    assert sae.config.hook == "unet.up_blocks.1.attentions.1"
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x, dense=True), theirs.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sae(x), theirs(x), rtol=1e-5, atol=1e-4)


def test_other_saelens_architectures_are_refused_by_name(tmp_path):
    write_saelens(tmp_path / "sae", weights(32), 32, architecture="jumprelu")
    with pytest.raises(ValueError, match="'jumprelu' is not supported.*'topk'"):
        KSparseAutoencoder.from_pretrained(tmp_path / "sae")


# --- pickled formats: converted once --------------------------------------------------------------------
def write_unbox(folder: Path, w, d_in: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"n_dirs_local": D_SAE, "d_model": d_in, "k": K, "auxk": 16, "dead_steps_threshold": 2441}))
    state = {"encoder.weight": w["enc"], "decoder.weight": w["dec"].T.contiguous(), "pre_bias": w["b_dec"], "latent_bias": w["enc_b"],
             "stats_last_nonzero": torch.zeros(D_SAE, dtype=torch.long)}
    torch.save({"state_dict": state}, folder / "state_dict.pth")
    torch.save(torch.rand(D_SAE) * 20 + 10, folder / "mean.pt")
    torch.save(torch.rand(D_SAE) * 5, folder / "std.pt")
    return folder


def test_sdxl_unbox_folders_convert_once_and_encode_as_sdxl_unbox(tmp_path):
    w, x = weights(64), tokens(64)
    block = write_unbox(tmp_path / "checkpoints" / "unet.down_blocks.2.attentions.1_k8_hidden128_auxk16_bs4096_lr0.0001" / "final", w, 64)
    with pytest.raises(ValueError, match="convert_saes.py"):
        KSparseAutoencoder.from_pretrained(block)
    written = _script("convert_saes").main([str(tmp_path / "checkpoints"), str(tmp_path / "out")])
    assert len(written) == 1
    sae = KSparseAutoencoder.from_pretrained(written[0])
    assert_same_sae(sae, unbox_reference(w, x), x)
    assert sae.config.hook == "unet.down_blocks.2.attentions.1" and sae.config.source.reads == "residual update"
    torch.testing.assert_close(sae.typical_activation, torch.load(block / "mean.pt", weights_only=True))


@dataclasses.dataclass
class SDSAERunnerConfig:
    """Stands in for the paper's training.config.SDSAERunnerConfig when writing a test checkpoint."""

    d_in: int = 32
    k: int = K
    expansion_factor: int = 4
    block_name: str = "mid_block"
    timestep: int = 25
    dtype: torch.dtype = torch.float32
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        self.d_sae = self.d_in * self.expansion_factor


def write_paper(path: Path, w, monkeypatch) -> Path:
    module = types.ModuleType("training.config")
    module.SDSAERunnerConfig = SDSAERunnerConfig
    monkeypatch.setitem(sys.modules, "training", types.ModuleType("training"))
    monkeypatch.setitem(sys.modules, "training.config", module)
    monkeypatch.setattr(SDSAERunnerConfig, "__module__", "training.config")
    state = {"W_enc": w["enc"].T.contiguous(), "b_enc": w["enc_b"], "W_dec": w["dec"], "b_dec": w["b_dec"]}
    torch.save({"cfg": SDSAERunnerConfig(), "state_dict": state}, path)
    return path


def test_paper_pt_converts_and_keeps_negative_codes(tmp_path, monkeypatch):
    w, x = weights(32), tokens(32)
    w["enc_b"] = w["enc_b"] - 12  # some of the top k pre-activations are negative
    write_paper(tmp_path / "final_sae.pt", w, monkeypatch)
    with pytest.raises(ValueError, match="convert_saes.py"):
        KSparseAutoencoder.from_pretrained(tmp_path / "final_sae.pt")
    (folder,) = _script("convert_saes").main([str(tmp_path / "final_sae.pt"), str(tmp_path / "out")])
    sae = KSparseAutoencoder.from_pretrained(folder)
    reference = paper_reference(w, x)
    assert (reference[0] < 0).any() and not sae.config.relu
    assert_same_sae(sae, reference, x)
    assert (sae.config.hook, sae.config.timestep, sae.config.pooling) == ("mid_block", 25, "mean")


# --- out, and back ----------------------------------------------------------------------------------------
def revelio_sae(d_in: int, input_scale: float = 1.0, **fields) -> KSparseAutoencoder:
    torch.manual_seed(0)
    sae = KSparseAutoencoder(d_in, D_SAE, K, input_scale=input_scale, **{"hook": "unet.up_blocks.1.attentions.1", **fields})
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_pre.normal_()
    return sae


@pytest.mark.parametrize("format", ["sparsify", "saelens"])
@pytest.mark.parametrize("d_in", [32, 64])
def test_export_then_import_is_bit_equal(tmp_path, format, d_in):
    sae, x = revelio_sae(d_in), tokens(d_in)
    back = KSparseAutoencoder.from_pretrained(sae.save_pretrained(tmp_path / format, format=format))
    for name, tensor in sae.state().items():
        assert torch.equal(back.state()[name], tensor), name
    code, again = sae.encode(x), back.encode(x)
    assert torch.equal(code.indices, again.indices) and torch.equal(code.values, again.values)
    assert torch.equal(sae.decode(code), back.decode(again))


def test_unit_norm_sae_round_trips_through_saelens_bit_equal(tmp_path):
    sae, x = revelio_sae(32, input_normalization="unit_norm", subtract_b_pre=False), tokens(32)
    back = KSparseAutoencoder.from_pretrained(sae.save_pretrained(tmp_path / "sae", format="saelens"))
    assert (back.config.input_normalization, back.config.subtract_b_pre) == ("unit_norm", False)
    assert torch.equal(sae(x), back(x))
    with pytest.raises(ValueError, match="format='saelens'"):
        sae.save_pretrained(tmp_path / "sparsify", format="sparsify")


@pytest.mark.parametrize("format", ["sparsify", "saelens"])
def test_input_scale_is_folded_into_the_exported_weights(tmp_path, format):
    sae, x = revelio_sae(32, input_scale=0.37), tokens(32)
    back = KSparseAutoencoder.from_pretrained(sae.save_pretrained(tmp_path / "a", format=format))
    assert back.input_scale == 1.0
    torch.testing.assert_close(back.encode(x, dense=True), sae.encode(x, dense=True), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(back(x), sae(x), rtol=1e-5, atol=1e-4)
    again = KSparseAutoencoder.from_pretrained(back.save_pretrained(tmp_path / "b", format=format))
    assert all(torch.equal(again.state()[n], t) for n, t in back.state().items())


def test_exports_load_in_eai_sparsify_with_the_same_codes(tmp_path):
    sparsify = pytest.importorskip("sparsify")
    sae, x = revelio_sae(64, input_scale=2.5), tokens(64).reshape(-1, 64)
    theirs = sparsify.SparseCoder.load_from_disk(sae.save_pretrained(tmp_path / "sae", format="sparsify"))
    out = theirs.encode(x)
    torch.testing.assert_close(scatter(out.top_acts, out.top_indices), sae.encode(x, dense=True), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(theirs.decode(out.top_acts, out.top_indices), sae(x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("fields", [{"input_scale": 2.5}, {"input_normalization": "unit_norm", "subtract_b_pre": False}])
def test_exports_load_in_sae_lens_with_the_same_codes(tmp_path, fields):
    sae_lens = pytest.importorskip("sae_lens")
    sae, x = revelio_sae(32, **fields), tokens(32).reshape(-1, 32)
    theirs = sae_lens.SAE.load_from_disk(sae.save_pretrained(tmp_path / "sae", format="saelens"))
    assert theirs.cfg.metadata.hook_name == "unet.up_blocks.1.attentions.1"
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), sae.encode(x, dense=True), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs(x), sae(x), rtol=1e-5, atol=1e-4)


def test_export_saes_cli_exports_every_sae_of_a_release(tmp_path):
    for hook in ("mid_block", "up_blocks.0"):
        revelio_sae(32, input_scale=1.5, hook=hook, timestep=250, pooling="none").save_pretrained(tmp_path / "release" / "saes" / hook / "t250" / "none")
    written = _script("export_saes").main([str(tmp_path / "release"), str(tmp_path / "out"), "--format", "saelens"])
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == ["mid_block/t250/none", "up_blocks.0/t250/none"]
    assert all((p / "sae_weights.safetensors").is_file() for p in written)


# --- steering reads imported SAEs through the same definitions ---------------------------------------
@pytest.mark.parametrize("fields", [{"input_normalization": "unit_norm"}, {"relu": False}, {"subtract_b_pre": False}])
def test_kept_values_match_encode_for_every_input_treatment(fields):
    sae, x = revelio_sae(32, **fields), tokens(32).reshape(-1, 32)
    chosen = torch.arange(0, D_SAE, 3)
    torch.testing.assert_close(kept_values(sae, x, chosen), sae.encode(x, dense=True)[:, chosen])
