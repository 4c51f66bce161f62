"""The TopK sparse autoencoder (k-SAE) of Makhzani & Frey and Gao et al. (2024).

x -> scale -> subtract pre-bias -> encode -> keep the top k (ReLU) -> decode with unit-norm
decoder rows -> add pre-bias -> unscale. SAEs trained elsewhere (:mod:`revelio.interop`) may instead
standardise each input row, leave the pre-bias out of the input, or keep the top k without a
ReLU; their :class:`SAEConfig` says which, so they encode as their own code does. Decoding is sparse (``embedding_bag`` over the k active
rows) and so is the encoder's backward pass: only the k kept pre-activations per input get a
gradient, so the weight gradient is a k-row accumulation per input instead of a dense matmul.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from revelio.artifact import ExtraFile, HubArtifact
from revelio.formats.artifacts import SAEConfig
from revelio.interop import ForeignSAE, read_foreign_sae, write_foreign_sae
from revelio.layout import SOURCE_STATS_FILE, STATS_FILE
from revelio.sae.kernels import SparseCodePattern
from revelio.sae.stats import FeatureStats, labels_from_metadata

# At most this many dense pre-activations per encoder call (256 MB of float32): the TopK encoder
# computes a dense [rows, d_sae] matrix before keeping the top k, so large inputs go in chunks.
ENCODE_ELEMENTS = 2**26
UNIT_NORM_EPS = 1e-5  # added to each row's std by "unit_norm" SAEs (SAeUron, SAELens layer_norm)


@dataclass
class SparseCode:
    """The k active latents of each input: ``values`` and ``indices``, both [..., k].

    A "unit_norm" SAE also keeps each input's ``mean`` and ``std`` ([..., 1]): decoding restores them.
    """

    values: torch.Tensor
    indices: torch.Tensor
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    def to_dense(self, d_sae: int) -> torch.Tensor:
        dense = self.values.new_zeros(*self.values.shape[:-1], d_sae)
        return dense.scatter_(-1, self.indices, self.values)


class _TopKEncode(torch.autograd.Function):
    """Encoder matmul + top-k + ReLU whose backward touches only the k kept latents per row.

    (The trainer's :class:`revelio.sae.fused_step.FusedStep` writes the same math out by hand into
    persistent buffers; this keeps ``encode`` differentiable for users' own training loops.)
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int, relu: bool = True):
        values, indices = pre_activations(x, weight, bias).topk(k, dim=-1, sorted=False)
        if relu:
            values = values.relu()
        ctx.relu = relu
        ctx.save_for_backward(x, weight, values, indices)
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx: Any, grad_values: torch.Tensor, _grad_indices: None):
        x, weight, values, indices = ctx.saved_tensors
        grad = grad_values * (values > 0) if ctx.relu else grad_values
        grad_x = F.embedding_bag(indices, weight, per_sample_weights=grad, mode="sum")
        grad_weight = SparseCodePattern(indices, weight.shape[0]).accumulate_(torch.empty_like(weight), grad, x, overwrite=True)
        grad_bias = torch.zeros(weight.shape[0], dtype=grad.dtype, device=grad.device)
        grad_bias.index_add_(0, indices.reshape(-1), grad.reshape(-1))
        return grad_x, grad_weight, grad_bias, None, None


def pre_activations(centred: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The encoder's dense pre-activations ``centred @ weight.T + bias`` ([rows, d_sae]) of inputs
    already scaled and centred (:meth:`KSparseAutoencoder.centre`): the one definition the SAE,
    its fused training step and steering share."""
    return torch.addmm(bias, centred, weight.t(), out=out)


class KSparseAutoencoder(nn.Module, HubArtifact[SAEConfig]):
    """A TopK SAE over ``d_in``-dimensional activations with ``d_sae`` latents, ``k`` active.

    ``input_scale`` multiplies inputs before encoding (and divides reconstructions), so training
    sees a fixed mean norm. Everything else an SAE knows about itself (the cell it reads, its
    training record, where it came from) is its typed :class:`SAEConfig`, ``sae.config``; extra
    keyword arguments are its fields. Works on [N, C] and [N, T, C] inputs.
    """

    artifact_type = "k-sparse-autoencoder"
    config_class = SAEConfig

    def __init__(self, d_in: int, d_sae: int, k: int, input_scale: float = 1.0, **fields: Any) -> None:
        super().__init__()
        self.config = SAEConfig(d_in=d_in, d_sae=d_sae, k=k, input_scale=float(input_scale), **fields)
        self.extra_files: dict[str, ExtraFile] = {}
        decoder = torch.randn(d_sae, d_in)
        decoder /= decoder.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(decoder)
        self.W_enc = nn.Parameter(decoder.clone())  # encoder starts as the decoder's transpose
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_pre = nn.Parameter(torch.zeros(d_in))

    @property
    def d_in(self) -> int:
        return self.config.d_in

    @property
    def d_sae(self) -> int:
        return self.config.d_sae

    @property
    def k(self) -> int:
        return self.config.k

    @property
    def input_scale(self) -> float:
        return self.config.input_scale

    @input_scale.setter
    def input_scale(self, value: float) -> None:
        self.config.input_scale = float(value)

    # --- the model -------------------------------------------------------------------------
    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_in:
            raise ValueError(f"this SAE takes inputs with {self.d_in} channels; got shape {tuple(x.shape)}")
        return x.reshape(-1, self.d_in).to(self.W_enc.device, self.W_enc.dtype)

    def encode(self, x: torch.Tensor, dense: bool = False) -> SparseCode | torch.Tensor:
        """Top-k codes of ``x`` ([..., d_in]) as a :class:`SparseCode`, or dense [..., d_sae].

        Any number of rows: they are encoded :data:`ENCODE_ELEMENTS` pre-activations at a time.
        """
        flat = self._flat(x)
        step = max(1, ENCODE_ELEMENTS // self.d_sae)
        parts = [self._encode_flat(flat[start : start + step]) for start in range(0, max(len(flat), 1), step)]
        values, indices, mean, std = (None if p[0] is None else torch.cat(p) if len(p) > 1 else p[0] for p in zip(*parts))
        lead = x.shape[:-1]
        code = SparseCode(values.reshape(*lead, self.k), indices.reshape(*lead, self.k),
                          *(None if s is None else s.reshape(*lead, 1) for s in (mean, std)))
        return code.to_dense(self.d_sae) if dense else code

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs in the encoder's frame: scaled to the training norm (or each row standardised, for
        a "unit_norm" SAE), pre-bias subtracted (unless the SAE's source encodes x itself)."""
        return self.frame(x)[0]

    def frame(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """:meth:`centre`'s result, and each row's mean and std when the SAE standardises rows."""
        mean = std = None
        if self.config.input_normalization == "scale":
            normal = x * self.input_scale
        else:
            mean = x.mean(dim=-1, keepdim=True)
            shifted = x - mean
            std = shifted.std(dim=-1, keepdim=True)
            normal = shifted / (std + UNIT_NORM_EPS)
        return (normal - self.b_pre if self.config.subtract_b_pre else normal), mean, std

    def _encode_flat(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        centred, mean, std = self.frame(x)
        return (*_TopKEncode.apply(centred, self.W_enc, self.b_enc, self.k, self.config.relu), mean, std)

    def to_input_units(self, y: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder-frame vectors ``y`` ([rows, d_in]) in the units of the inputs: unscaled, or for a
        "unit_norm" SAE times each input's std plus its mean ([rows, 1], from its SparseCode).

        A change of codes moves the input by ``to_input_units(change @ W_dec, 0, std)``: steering a
        unit_norm SAE needs each row's std.
        """
        if self.config.input_normalization == "scale":
            return y / self.input_scale
        if mean is None or std is None:
            raise ValueError("a unit_norm SAE decodes to input units only with the statistics of the inputs it encoded: "
                             "decode the SparseCode that encode returned, not a dense code")
        return y * std + mean

    def decode(self, code: SparseCode | torch.Tensor) -> torch.Tensor:
        """Reconstruction in input units from a :class:`SparseCode` or a dense [..., d_sae] code."""
        if isinstance(code, torch.Tensor):
            if code.shape[-1] != self.d_sae:
                raise ValueError(f"dense codes need {self.d_sae} latents; got shape {tuple(code.shape)}")
            return self.to_input_units(code @ self.W_dec + self.b_pre)
        lead = code.values.shape[:-1]
        flat = self._decode_flat(code.values.reshape(-1, code.values.shape[-1]), code.indices.reshape(-1, code.indices.shape[-1]))
        stats = (None if s is None else s.reshape(-1, 1).to(flat) for s in (code.mean, code.std))
        return self.to_input_units(flat, *stats).reshape(*lead, self.d_in)

    def _decode_flat(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The decoder's output with b_pre added, in the encoder's frame."""
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=values.to(self.W_dec.dtype), mode="sum") + self.b_pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of ``x``."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Project decoder rows back to unit norm (after each optimiser step)."""
        self.W_dec /= torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the gradient component along each decoder row; it would only change its norm."""
        grad = self.W_dec.grad
        if grad is not None:  # row-wise dots via bmm and an in-place update: no [d_sae, d_in] temporaries
            parallel = torch.bmm(grad.unsqueeze(1), self.W_dec.unsqueeze(2)).reshape(-1, 1)
            grad.addcmul_(self.W_dec, parallel, value=-1)

    @torch.no_grad()
    def keep_latents(self, keep: torch.Tensor) -> KSparseAutoencoder:
        """A copy with only the latents where ``keep`` ([d_sae] bool) is true, in their order.

        Dropping latents that never fire leaves every reconstruction as it was (they were never in
        a top-k); the trainer uses it to ship no latent the data does not use.
        """
        keep = torch.as_tensor(keep, dtype=torch.bool, device=self.W_dec.device)
        if keep.shape != (self.d_sae,):
            raise ValueError(f"keep must be a [{self.d_sae}] mask; got shape {tuple(keep.shape)}")
        if int(keep.sum()) < self.k:
            raise ValueError(f"keeping {int(keep.sum())} latents leaves fewer than k = {self.k}")
        kept = KSparseAutoencoder.from_config(dataclasses.replace(self.config, d_sae=int(keep.sum())))
        for name in ("W_enc", "W_dec", "b_enc"):
            getattr(kept, name).copy_(getattr(self, name)[keep])
        kept.b_pre.copy_(self.b_pre)
        return kept.to(self.W_dec.device)

    # --- the Hub format --------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, repo_id_or_dir: str | Path, subfolder: str | None = None, revision: str | None = None,
                        **hub_kwargs: Any) -> KSparseAutoencoder:
        """Load revelio's format, or a sparsify / SAeUron / SAEmnesia or SAELens TopK folder, from a
        local folder or a Hub repo id (``subfolder`` picks one SAE). Pickled formats (SDXL-unbox,
        the paper's .pt) are refused here: convert them once with train/convert_saes.py."""
        foreign = read_foreign_sae(repo_id_or_dir, subfolder, revision, **hub_kwargs)
        if foreign is None:
            return super().from_pretrained(repo_id_or_dir, subfolder, revision, **hub_kwargs)
        return cls.from_foreign(foreign)

    @classmethod
    def from_foreign(cls, foreign: ForeignSAE) -> KSparseAutoencoder:
        """The SAE another format's files describe (read by :mod:`revelio.interop`)."""
        sae = cls.from_config(foreign.config)
        sae.load_state(foreign.tensors)
        sae.extra_files = dict(foreign.extra_files)
        return sae

    def save_pretrained(self, directory: str | Path, format: Literal["revelio", "sparsify", "saelens"] = "revelio") -> Path:
        """Write revelio's format, or a folder that eai-sparsify or sae-lens load with their own
        loaders (:mod:`revelio.interop`; feature statistics are revelio's and stay behind)."""
        if format == "revelio":
            return super().save_pretrained(directory)
        return write_foreign_sae(format, self.config, self.state(), Path(directory))

    @property
    def typical_activation(self) -> torch.Tensor | None:
        """[d_sae]: each feature's typical value as its source measured it (SDXL-unbox's mean.pt,
        which its app multiplies by strength and k for a clamp value), or None."""
        entry = self.extra_files.get(SOURCE_STATS_FILE)
        return None if entry is None else entry[0].get("typical_activation")

    @classmethod
    def from_config(cls, config: SAEConfig) -> KSparseAutoencoder:
        return cls(**{f.name: copy.deepcopy(getattr(config, f.name)) for f in dataclasses.fields(config)})

    @classmethod
    def weight_shapes(cls, config: SAEConfig) -> dict[str, tuple[int, ...]]:
        d_in, d_sae = config.d_in, config.d_sae
        return {"W_enc": (d_sae, d_in), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_pre": (d_in,)}

    def state(self) -> dict[str, torch.Tensor]:
        return {name: p.data for name, p in self.named_parameters()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(tensors)

    @property
    def feature_stats(self) -> FeatureStats | None:
        """Per-feature statistics saved beside the weights (firing frequency, exemplars, labels).

        Built once per stored entry: callers (the app, scripts) read it on every request.
        """
        entry = self.extra_files.get(STATS_FILE)
        if entry is None:
            return None
        built = getattr(self, "_built_stats", None)
        if built is None or built[0] is not entry:
            tensors, metadata = entry
            built = (entry, FeatureStats.from_tensors(tensors, labels_from_metadata(metadata)))
            self._built_stats = built
        return built[1]

    @feature_stats.setter
    def feature_stats(self, stats: FeatureStats) -> None:
        if len(stats.firing_frequency) != self.d_sae:
            raise ValueError(f"statistics describe {len(stats.firing_frequency)} features; this SAE has {self.d_sae}")
        self.extra_files[STATS_FILE] = (stats.to_tensors(), stats.to_metadata())

    def extra_repr(self) -> str:
        where = ", ".join(f"{k}={getattr(self.config, k)!r}" for k in ("hook", "timestep", "pooling") if getattr(self.config, k) is not None)
        return f"d_in={self.d_in}, d_sae={self.d_sae}, k={self.k}" + (f", {where}" if where else "")
