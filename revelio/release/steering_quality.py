"""How real the images steered towards a class look: a Fréchet distance against real images of that class.

Success says the judge now calls an image c; it does not say the image looks like a real c rather
than a smudge the classifier happens to place there. For each target class c the images steered
towards c are compared with the real test images of c on the reference classifier's penultimate
features (:func:`~revelio.probes.reference_classifier.frechet_distance`; Inception knows nothing of
28 px garments), beside three yardsticks: the same seeds unsteered (where the images started), the
model's own images of c (what it draws when asked for c), and as many other real images of c (the
floor: how far two real samples of c are from each other). The distance grows as a set shrinks, so
every set compared with the real images of c has as many images as were steered towards c.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from revelio.data.datasets import load_image_dataset
from revelio.data.images import to_pixels
from revelio.errors import DatasetError
from revelio.probes.reference_classifier import ReferenceClassifier, frechet_distance
from revelio.release.load import Release

log = logging.getLogger(__name__)


@dataclass
class ClassQuality:
    """The real test images of each class, split once: a floor sample and the reference the others are compared with."""

    classifier: ReferenceClassifier
    real: dict[int, torch.Tensor]  # class -> penultimate features of its real test images, in a seeded order

    @classmethod
    def load(cls, release: Release, classifier: ReferenceClassifier, seed: int = 0) -> ClassQuality:
        """The penultimate features of every real test image of the release's dataset, by class of its label set."""
        try:
            data = load_image_dataset(release.info.dataset, "test", label_column=release.label_set_name)
        except (ValueError, FileNotFoundError) as err:
            raise DatasetError(f"the Fréchet distance of steered images needs the real test images of "
                               f"{release.info.dataset!r}: {err}") from None
        if data.label_column is None:
            raise DatasetError(f"the test split of {release.info.dataset!r} has no labels to group real images by class")
        pixels = to_pixels(data.dataset[data.image_column], classifier.resolution, classifier.image_channels)
        features = classifier.features(pixels)
        labels = torch.as_tensor(data.dataset[data.label_column])
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        features, labels = features[order], labels[order]
        return cls(classifier, {c: features[labels == c] for c in range(len(release.class_names))})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features of generated images in [0, 1]."""
        return self.classifier.features(images * 2 - 1)

    def distance(self, target: int, features: torch.Tensor) -> float | None:
        """Fréchet distance of ``features`` (one set of generated images) to the real images of ``target``
        beyond the floor sample; None (logged) when the class has too few real test images for it."""
        real = self._split(target, len(features))
        return None if real is None else frechet_distance(features, real[1])

    def floor(self, target: int, count: int) -> float | None:
        """Fréchet distance between ``count`` real images of ``target`` and the rest of its real images."""
        real = self._split(target, count)
        return None if real is None else frechet_distance(*real)

    def _split(self, target: int, count: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        real = self.real[target]
        if count < 2 or len(real) < count + 2:
            log.warning("class %d has %d real test images: too few for a Fréchet distance of %d generated images",
                        target, len(real), count)
            return None
        return real[:count], real[count:]
