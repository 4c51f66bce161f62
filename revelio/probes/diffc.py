"""Diff-C, the paper's conv head on a block's spatial feature map ([N, H*W, C] tokens).

Parameter-free input BatchNorm, four 3x3 convolutions (the last three with stride 2), each with
BatchNorm and ReLU, global average pooling, one linear layer; widths scale with the input channels.

Training is memory-bound on CPU (the first block's maps are as large as the input), so it runs
channels-last (the [N, H*W, C] tokens already are), with ReLU and dropout fused into one mask
multiply whose random bits come four to a 64-bit draw (``bernoulli_`` alone was a sixth of a step),
and evaluates in chunks. On hardware with native bfloat16 (AVX512-BF16 / AMX CPUs, CUDA) it
trains in mixed precision by default (``precision="auto"``). The head is the same: same layers,
same dropout rate, same optimiser and schedule.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from revelio.formats.artifacts import ProbeConfig
from revelio.probes.probe import Probe, Split


class DiffCProbe(Probe):
    """The paper's Diff-C head on a block's spatial feature map ([N, H*W, C] tokens)."""

    kind = "diff-c"

    @classmethod
    def create(cls, d_in: int, grid_side: int, class_names: list[str], width: int | None = None, dropout: float = 0.1,
               **fields: Any) -> DiffCProbe:
        """A new (untrained) probe; ``width`` defaults to about half the input channels (32..512)."""
        width = width or int(min(512, max(32, 2 ** round(math.log2(max(d_in, 1) / 2)))))
        return cls(ProbeConfig(probe_type=cls.kind, class_names=list(class_names), d_in=d_in, grid_side=grid_side, width=width,
                               dropout=dropout, input_normalization="BatchNorm2d without affine parameters (running stats in model.safetensors)",
                               **fields))

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__(config)
        if config.grid_side is None or config.width is None:
            raise ValueError("a diff-c probe's config needs grid_side and width")
        d_in, class_names, dropout = config.d_in, config.class_names, 0.1 if config.dropout is None else config.dropout
        self.grid_side, self.width = config.grid_side, config.width
        self.input_norm = nn.BatchNorm2d(d_in, affine=False)  # parameter-free input normalisation
        layers: list[nn.Module] = []
        channels = d_in
        for stride in (1, 2, 2, 2):
            layers += [nn.Conv2d(channels, self.width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(self.width), nn.ReLU(), nn.Dropout(dropout)]
            channels = self.width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(self.width, len(class_names))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self._check_features(features, self.d_in, "spatial tokens [N, H*W, C]")
        if x.ndim != 3 or x.shape[1] != self.grid_side**2:
            raise ValueError(f"Diff-C takes [N, {self.grid_side ** 2}, {self.d_in}] tokens (pooling='none'); got {tuple(x.shape)}")
        # [N, H*W, C] tokens viewed as [N, C, H, W] maps: a channels-last view, no copy.
        maps = x.transpose(1, 2).reshape(x.shape[0], self.d_in, self.grid_side, self.grid_side)
        h = self.input_norm(maps)
        layers = list(self.body)
        for conv, norm, _relu, dropout in zip(*[iter(layers)] * 4):  # the body's blocks, ReLU + dropout fused
            h = _relu_dropout(norm(conv(h)), dropout.p if self.training else 0.0)
        return self.head(h.mean(dim=(2, 3)))

    @torch.no_grad()
    def predict_proba(self, features: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities [N, num_classes], ``batch_size`` images at a time (bounded memory)."""
        if len(features) <= batch_size:
            return self(features).softmax(dim=-1)
        return torch.cat([self(part).softmax(dim=-1) for part in features.split(batch_size)])

    @torch.no_grad()
    def predict(self, features: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return self.predict_proba(features, batch_size).argmax(dim=-1)

    @classmethod
    def fit(
        cls, train: Split, validation: Split, class_names: list[str], grid_side: int, epochs: int = 30,
        batch_size: int = 128, lr: float = 1e-3, seed: int = 0, precision: str = "auto", **metadata: Any,
    ) -> DiffCProbe:
        """Adam with cosine decay; keeps the epoch with the best validation accuracy.

        ``precision``: "float32", "bfloat16" (mixed precision: convolutions and activations in
        bfloat16 under autocast, parameters, optimiser and loss in float32), or "auto":
        bfloat16 where the hardware computes it natively (CUDA, or a CPU with AVX512-BF16 or
        AMX), float32 elsewhere. Validation accuracy, and so the choice of epoch, is always
        measured in float32, as the stored probe is applied. The precision used is recorded in
        the probe's ``training`` metadata. Weights and dropout draw from ``seed`` alone, so the
        same data gives the same probe whatever ran before in the process (a resumed build).
        """
        torch.manual_seed(seed)
        device = train.features.device
        precision = resolve_precision(precision, device)
        labels = train.labels.to(device)
        torch.manual_seed(seed)
        probe = cls.create(train.features.shape[-1], grid_side, class_names, **metadata).to(device)
        probe.to(memory_format=torch.channels_last)  # matches the token layout of the input maps
        opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=1e-4)
        steps_per_epoch = math.ceil(len(train.labels) / batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
        best = (-1.0, probe.state())
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            probe.train()
            order = torch.randperm(len(train.labels), generator=generator).to(device)
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                if len(batch) < 2:
                    continue  # BatchNorm needs two samples
                with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bfloat16"):
                    logits = probe(train.features[batch].float())
                loss = F.cross_entropy(logits.float(), labels[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
                schedule.step()
            probe.eval()
            accuracy = probe.accuracy(validation.features, validation.labels.to(device))
            if accuracy > best[0]:
                best = (accuracy, {k: v.clone() for k, v in probe.state().items()})
        probe.to(memory_format=torch.contiguous_format)
        probe.load_state(best[1])
        probe.config.metrics.update(validation_accuracy=best[0])
        probe.config.training = {**probe.config.training, "precision": precision}
        return probe


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """"float32" or "bfloat16" for ``precision`` ("auto": bfloat16 only where it is native)."""
    if precision not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"precision must be 'auto', 'float32' or 'bfloat16'; got {precision!r}")
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    try:  # private helpers, present since torch 2.1; without them assume no native bfloat16
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:
        native = False
    return "bfloat16" if native else "float32"


class _ReLUDropout(torch.autograd.Function):
    """relu(x) then dropout(p) as one multiply by a saved mask (one pass forward, one backward)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = x > 0
        if p > 0:
            keep &= _keep_mask(x, p)
            mask = keep.to(x.dtype).mul_(1.0 / (1.0 - _drop_rate(p)))
        else:
            mask = keep.to(x.dtype)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def _relu_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    if p == 0 and not (torch.is_grad_enabled() and x.requires_grad):
        return x.relu()
    return _ReLUDropout.apply(x, p)


_LEVELS = 1 << 16  # dropout draws 16 random bits per element


def _drop_rate(p: float) -> float:
    """The dropout rate actually applied: ``p`` rounded to a multiple of 2**-16."""
    return round(p * _LEVELS) / _LEVELS


def _keep_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """Bernoulli(1 - p) keep mask shaped and strided like ``like``, 16 bits per element.

    Four elements per 64-bit draw of the default generator (seeded by ``torch.manual_seed``),
    several times cheaper on CPU than ``bernoulli_``'s one draw and float compare per element.
    """
    n = like.numel()
    words = torch.empty(-(-n // 4), dtype=torch.int64, device=like.device).random_(-(2**63), None)
    bits = words.view(torch.int16)[:n]
    dense = like.is_contiguous() or like.is_contiguous(memory_format=torch.channels_last)
    bits = bits.as_strided(like.shape, like.stride()) if dense else bits.reshape(like.shape)
    return bits >= round(p * _LEVELS) - _LEVELS // 2
