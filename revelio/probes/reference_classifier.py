"""A small CNN trained on real images, independent of any diffusion model, that judges samples.

Not a probe (it never sees diffusion features), but a light classifier like them, stored the same way.

It answers "does this generated image look like class c?" for the quality gate of the bundled
model and for steering measurements, so it must never see our model's features or samples.
Saved like every revelio artifact: config.json + model.safetensors.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import scipy.linalg
import torch
from torch import nn
from tqdm.auto import tqdm

from revelio.artifact import HubArtifact
from revelio.formats.artifacts import ReferenceClassifierConfig


class ReferenceClassifier(nn.Module, HubArtifact[ReferenceClassifierConfig]):
    """Two conv layers and an MLP head over images in [-1, 1] ([N, C, H, W])."""

    artifact_type = "reference_classifier"
    config_class = ReferenceClassifierConfig

    def __init__(self, image_channels: int, resolution: int, class_names: list[str], width: int = 32, **fields: Any) -> None:
        super().__init__()
        if resolution % 4:
            raise ValueError(f"resolution must be a multiple of 4 (two 2x poolings), got {resolution}")
        self.config = ReferenceClassifierConfig(image_channels, resolution, list(class_names), width, **fields)
        self.image_channels, self.resolution, self.width = image_channels, resolution, width
        self.class_names = self.config.class_names
        side = resolution // 4
        self.net = nn.Sequential(
            nn.Conv2d(image_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * side * side, 128), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(128, len(class_names)),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        expected = (self.image_channels, self.resolution, self.resolution)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"expected images of shape [N, {', '.join(map(str, expected))}], got {list(images.shape)}")
        return self.net(images.float())

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Class probabilities [N, n_classes] for images in [-1, 1]."""
        self.eval()
        return torch.cat([self(part).softmax(-1) for part in images.split(batch_size)])

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.predict_proba(images).argmax(-1)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """The penultimate layer [N, 128] for images in [-1, 1]: what a Fréchet distance between
        sets of images compares (a classifier of real images of this dataset, where Inception's
        features know nothing of 28 px garments)."""
        self.eval()
        self(images[:1])  # the shape check
        head = self.net[:-2]  # everything before the dropout and the last linear layer
        return torch.cat([head(part.float()) for part in images.split(batch_size)])

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.predict(images) == labels).float().mean())

    @classmethod
    def fit(
        cls,
        images: torch.Tensor,
        labels: torch.Tensor,
        class_names: list[str],
        epochs: int = 3,
        batch_size: int = 128,
        lr: float = 1e-3,
        seed: int = 0,
        **metadata: Any,
    ) -> ReferenceClassifier:
        """Train with Adam and random shifts of up to 2 pixels (samples are rarely centred exactly)."""
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = cls(images.shape[1], images.shape[-1], class_names, **metadata)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * -(-len(images) // batch_size))
        model.train()
        for _ in tqdm(range(epochs), desc="reference classifier", unit="epoch"):
            order = torch.randperm(len(images), generator=generator)
            for batch in order.split(batch_size):
                shift = tuple(int(s) for s in torch.randint(-2, 3, (2,), generator=generator))
                x = torch.roll(images[batch], shifts=shift, dims=(2, 3))
                loss = nn.functional.cross_entropy(model(x), labels[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule.step()
        model.eval()
        return model

    # --- HubArtifact -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: ReferenceClassifierConfig) -> ReferenceClassifier:
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})

    @classmethod
    def weight_shapes(cls, config: ReferenceClassifierConfig) -> dict[str, tuple[int, ...]]:
        return {name: tuple(p.shape) for name, p in cls.from_config(config).state_dict().items()}

    def state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().contiguous() for name, p in self.state_dict().items()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(tensors)
        self.eval()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two sets of features [N, D] (FID's formula:
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))). It grows as either set shrinks, so only
    distances between sets of the same sizes compare."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two sets of at least 2 feature vectors of one width; got {tuple(a.shape)} and {tuple(b.shape)}")
    x, y = a.double().numpy(), b.double().numpy()
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    with warnings.catch_warnings():  # fewer samples than dimensions make the product singular: handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(cov_x @ cov_y)
        if not np.isfinite(root).all():  # offset both covariances slightly, as FID's reference code does
            offset = np.eye(len(cov_x)) * 1e-6
            root = scipy.linalg.sqrtm((cov_x + offset) @ (cov_y + offset))
    distance = ((mu_x - mu_y) ** 2).sum() + np.trace(cov_x) + np.trace(cov_y) - 2 * np.trace(np.real(root))
    return float(max(distance, 0.0))
