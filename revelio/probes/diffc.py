"""Diff-C, the paper's conv head on a block's spatial feature map ([N, H*W, C] tokens).

Parameter-free input BatchNorm, four 3x3 convolutions (the last three with stride 2), each with
BatchNorm and ReLU, global average pooling, one linear layer; widths scale with the input channels.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from revelio.probes.base import Probe, Split


class DiffCProbe(Probe):
    """The paper's Diff-C head on a block's spatial feature map ([N, H*W, C] tokens)."""

    kind = "diff-c"

    def __init__(self, d_in: int, grid_side: int, class_names: list[str], width: int | None = None, dropout: float = 0.1, **metadata: Any) -> None:
        super().__init__(class_names, **metadata)
        self.d_in, self.grid_side = d_in, grid_side
        self.width = width or int(min(512, max(32, 2 ** round(math.log2(max(d_in, 1) / 2)))))
        self.dropout = dropout
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
        maps = x.transpose(1, 2).reshape(x.shape[0], self.d_in, self.grid_side, self.grid_side)
        return self.head(self.body(self.input_norm(maps)).mean(dim=(2, 3)))

    def shape_config(self) -> dict[str, Any]:
        return {"d_in": self.d_in, "grid_side": self.grid_side, "width": self.width, "dropout": self.dropout,
                "input_normalization": "BatchNorm2d without affine parameters (running stats in model.safetensors)"}

    @classmethod
    def build(cls, config: dict[str, Any], metadata: dict[str, Any]) -> DiffCProbe:
        return cls(int(config["d_in"]), int(config["grid_side"]), list(config["class_names"]), int(config["width"]), float(config.get("dropout", 0.1)), **metadata)

    @classmethod
    def fit(
        cls, train: Split, validation: Split, class_names: list[str], grid_side: int, epochs: int = 30,
        batch_size: int = 128, lr: float = 1e-3, seed: int = 0, **metadata: Any,
    ) -> DiffCProbe:
        """Adam with cosine decay; keeps the epoch with the best validation accuracy."""
        torch.manual_seed(seed)
        probe = cls(train.features.shape[-1], grid_side, class_names, **metadata)
        opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=1e-4)
        steps_per_epoch = math.ceil(len(train.labels) / batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
        best = (-1.0, probe.state())
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            probe.train()
            order = torch.randperm(len(train.labels), generator=generator)
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                if len(batch) < 2:
                    continue  # BatchNorm needs two samples
                loss = F.cross_entropy(probe(train.features[batch].float()), train.labels[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
                schedule.step()
            probe.eval()
            accuracy = probe.accuracy(validation.features, validation.labels)
            if accuracy > best[0]:
                best = (accuracy, {k: v.clone() for k, v in probe.state().items()})
        probe.load_state(best[1])
        probe.metadata.setdefault("metrics", {}).update(validation_accuracy=best[0])
        return probe
