"""Light classifiers on frozen diffusion features: how much does a (block, timestep) know?

- :class:`LinearProbe`: multinomial logistic regression on pooled [N, C] features (or on SAE
  codes), standardised inputs, L2 strength chosen on a validation split. Fitted with
  scikit-learn, stored and applied as plain tensors.
- :class:`DiffCProbe`: the paper's Diff-C head on spatial maps [N, H*W, C]: parameter-free input
  BatchNorm, four 3x3 convolutions (the last three with stride 2), each with BatchNorm and ReLU,
  global average pooling, one linear layer; widths scale with the input channels.

Both share the SAE's Hub grammar (``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``);
``Probe.from_pretrained`` returns whichever kind a folder holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from revelio.hub import ArtifactFormatError, HubArtifact

# Inverse L2 strengths tried for the linear probe, picked on the validation split.
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
# Descriptive fields a probe carries to the Hub (JSON values).
PROBE_METADATA = ("backbone", "hook", "timestep", "pooling", "dataset", "split", "sae", "metrics")


@dataclass
class Split:
    """Features and integer labels of one split."""

    features: torch.Tensor
    labels: torch.Tensor


def split_train_validation(features: torch.Tensor, labels: torch.Tensor, validation_fraction: float = 0.2, seed: int = 0) -> tuple[Split, Split]:
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    cut = max(1, int(len(labels) * validation_fraction))
    return Split(features[order[cut:]], labels[order[cut:]]), Split(features[order[:cut]], labels[order[:cut]])


class Probe(nn.Module, HubArtifact):
    """Base of the probe family: class names, metadata, prediction, and kind dispatch on load."""

    artifact_type = "probe"
    kind: ClassVar[str]
    _kinds: ClassVar[dict[str, type[Probe]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Probe._kinds[cls.kind] = cls

    def __init__(self, class_names: list[str], **metadata: Any) -> None:
        super().__init__()
        unknown = set(metadata) - set(PROBE_METADATA)
        if unknown:
            raise TypeError(f"unknown probe config fields {sorted(unknown)}; known: {PROBE_METADATA}")
        self.class_names = list(class_names)
        self.metadata: dict[str, Any] = dict(metadata)
        self.extra_files = {}

    def _check_features(self, features: torch.Tensor, expected: int, layout: str) -> torch.Tensor:
        if features.shape[-1] != expected:
            raise ValueError(
                f"this probe takes {layout} with {expected} channels; got shape {tuple(features.shape)}. "
                "Extract features from the hook point, timestep and pooling it was trained on "
                f"({ {k: self.metadata.get(k) for k in ('hook', 'timestep', 'pooling')} })."
            )
        weight = next(self.parameters())
        return features.to(weight.device, weight.dtype)

    @torch.no_grad()
    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """Class probabilities [N, num_classes]."""
        return self(features).softmax(dim=-1)

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return self(features).argmax(dim=-1)

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.predict(features) == labels).float().mean())

    def config_dict(self) -> dict[str, Any]:
        return {"probe_type": self.kind, "class_names": self.class_names, **self.shape_config(), **self.metadata}

    def shape_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Probe:
        kind = Probe._kinds.get(config.get("probe_type", ""))
        if kind is None:
            raise ArtifactFormatError(f"unknown probe_type {config.get('probe_type')!r}; known: {sorted(Probe._kinds)}")
        metadata = {key: config[key] for key in PROBE_METADATA if key in config}
        return kind.build(config, metadata)

    @classmethod
    def build(cls, config: dict[str, Any], metadata: dict[str, Any]) -> Probe:
        raise NotImplementedError

    @classmethod
    def weight_shapes(cls, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        probe = cls.from_config(config)
        return {name: tuple(t.shape) for name, t in probe.state().items()}

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self.state_dict())

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(tensors)
        self.eval()

    @classmethod
    def from_pretrained(cls, repo_id_or_dir: Any, subfolder: str | None = None, revision: str | None = None, **hub_kwargs: Any) -> Probe:
        probe = super().from_pretrained(repo_id_or_dir, subfolder, revision, **hub_kwargs)
        if cls is not Probe and not isinstance(probe, cls):
            raise ArtifactFormatError(f"{repo_id_or_dir}/{subfolder or ''} holds a {probe.kind} probe, not a {cls.kind}")
        return probe


class LinearProbe(Probe):
    """Standardise, then a linear layer: logistic regression on pooled features or SAE codes."""

    kind = "linear"

    def __init__(self, d_in: int, class_names: list[str], **metadata: Any) -> None:
        super().__init__(class_names, **metadata)
        self.d_in = d_in
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("scale", torch.ones(d_in))
        self.linear = nn.Linear(d_in, len(class_names))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self._check_features(features, self.d_in, "pooled features [N, C]")
        return self.linear((x - self.mean) / self.scale)

    def shape_config(self) -> dict[str, Any]:
        return {"d_in": self.d_in, "input_normalization": "standardize: (x - mean) / scale, both in model.safetensors"}

    @classmethod
    def build(cls, config: dict[str, Any], metadata: dict[str, Any]) -> LinearProbe:
        return cls(int(config["d_in"]), list(config["class_names"]), **metadata)

    @classmethod
    def fit(
        cls, train: Split, validation: Split, class_names: list[str], max_iter: int = 300, **metadata: Any
    ) -> LinearProbe:
        """Fit for each C in :data:`C_GRID`, keep the best on ``validation``, refit on both splits."""
        from sklearn.linear_model import LogisticRegression

        x_train, x_val = train.features.double().numpy(), validation.features.double().numpy()
        mean, scale = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
        scores = {}
        for c in C_GRID:
            model = LogisticRegression(C=c, max_iter=max_iter)
            model.fit((x_train - mean) / scale, train.labels.numpy())
            scores[c] = model.score((x_val - mean) / scale, validation.labels.numpy())
        best_c = max(scores, key=lambda c: (scores[c], -c))
        x_all = np.concatenate([x_train, x_val])
        y_all = np.concatenate([train.labels.numpy(), validation.labels.numpy()])
        model = LogisticRegression(C=best_c, max_iter=max_iter).fit((x_all - mean) / scale, y_all)
        probe = cls(x_train.shape[1], class_names, **metadata)
        weight, bias = _full_weights(model, len(class_names))
        with torch.no_grad():
            probe.mean.copy_(torch.from_numpy(mean))
            probe.scale.copy_(torch.from_numpy(scale))
            probe.linear.weight.copy_(torch.from_numpy(weight))
            probe.linear.bias.copy_(torch.from_numpy(bias))
        probe.metadata.setdefault("metrics", {}).update(validation_accuracy=scores[best_c], l2_inverse_strength=best_c)
        return probe.eval()


def _full_weights(model: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's coefficients expanded to every class (absent classes never win)."""
    weight = np.zeros((num_classes, model.coef_.shape[1]))
    bias = np.full(num_classes, -1e4)
    classes = model.classes_.astype(int)
    if len(classes) == 2 and model.coef_.shape[0] == 1:  # binary: sklearn keeps one row
        weight[classes[1]], bias[classes[1]] = model.coef_[0], model.intercept_[0]
        bias[classes[0]] = 0.0
    else:
        weight[classes], bias[classes] = model.coef_, model.intercept_
    return weight, bias


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
