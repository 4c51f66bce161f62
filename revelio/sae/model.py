"""The TopK sparse autoencoder (k-SAE) of Makhzani & Frey and Gao et al. (2024).

x -> scale -> subtract pre-bias -> encode -> keep the top k (ReLU) -> decode with unit-norm
decoder rows -> add pre-bias -> unscale. Decoding is sparse (``embedding_bag`` over the k active
rows) and so is the encoder's backward pass: only the k kept pre-activations per input get a
gradient, so the weight gradient is a k-row accumulation per input instead of a dense matmul.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from revelio.artifact import ExtraFile, HubArtifact
from revelio.formats.artifacts import SAEConfig
from revelio.layout import STATS_FILE
from revelio.sae.kernels import SparseCodePattern
from revelio.sae.stats import FeatureStats, labels_from_metadata

# At most this many dense pre-activations per encoder call (256 MB of float32): the TopK encoder
# computes a dense [rows, d_sae] matrix before keeping the top k, so large inputs go in chunks.
ENCODE_ELEMENTS = 2**26


@dataclass
class SparseCode:
    """The k active latents of each input: ``values`` and ``indices``, both [..., k]."""

    values: torch.Tensor
    indices: torch.Tensor

    def to_dense(self, d_sae: int) -> torch.Tensor:
        dense = self.values.new_zeros(*self.values.shape[:-1], d_sae)
        return dense.scatter_(-1, self.indices, self.values)


class _TopKEncode(torch.autograd.Function):
    """Encoder matmul + top-k + ReLU whose backward touches only the k kept latents per row.

    (The trainer's :class:`revelio.sae.fused_step.FusedStep` writes the same math out by hand into
    persistent buffers; this keeps ``encode`` differentiable for users' own training loops.)
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int):
        values, indices = pre_activations(x, weight, bias).topk(k, dim=-1, sorted=False)
        values = values.relu()
        ctx.save_for_backward(x, weight, values, indices)
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx: Any, grad_values: torch.Tensor, _grad_indices: None):
        x, weight, values, indices = ctx.saved_tensors
        grad = grad_values * (values > 0)
        grad_x = F.embedding_bag(indices, weight, per_sample_weights=grad, mode="sum")
        grad_weight = SparseCodePattern(indices, weight.shape[0]).accumulate_(torch.empty_like(weight), grad, x, overwrite=True)
        grad_bias = torch.zeros(weight.shape[0], dtype=grad.dtype, device=grad.device)
        grad_bias.index_add_(0, indices.reshape(-1), grad.reshape(-1))
        return grad_x, grad_weight, grad_bias, None


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
        if len(flat) <= step:
            values, indices = self._encode_flat(flat)
        else:
            parts = [self._encode_flat(flat[start : start + step]) for start in range(0, len(flat), step)]
            values, indices = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        code = SparseCode(values.reshape(*x.shape[:-1], self.k), indices.reshape(*x.shape[:-1], self.k))
        return code.to_dense(self.d_sae) if dense else code

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs in the encoder's frame: scaled to the training norm, pre-bias subtracted."""
        return x * self.input_scale - self.b_pre

    def _encode_flat(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _TopKEncode.apply(self.centre(x), self.W_enc, self.b_enc, self.k)

    def decode(self, code: SparseCode | torch.Tensor) -> torch.Tensor:
        """Reconstruction in input units from a :class:`SparseCode` or a dense [..., d_sae] code."""
        if isinstance(code, torch.Tensor):
            if code.shape[-1] != self.d_sae:
                raise ValueError(f"dense codes need {self.d_sae} latents; got shape {tuple(code.shape)}")
            return (code @ self.W_dec + self.b_pre) / self.input_scale
        lead = code.values.shape[:-1]
        flat = self._decode_flat(code.values.reshape(-1, code.values.shape[-1]), code.indices.reshape(-1, code.indices.shape[-1]))
        return flat.reshape(*lead, self.d_in)

    def _decode_flat(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        out = F.embedding_bag(indices, self.W_dec, per_sample_weights=values.to(self.W_dec.dtype), mode="sum")
        return (out + self.b_pre) / self.input_scale

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
