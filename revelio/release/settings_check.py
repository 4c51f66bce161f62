"""A release's settings checked against its dataset and model before any step runs.

What can be adapted safely is adapted, and the log says so with the flag that was too large (a
subset bigger than the split takes the whole split; an SAE batch bigger than the rows it trains
on shrinks to them; more held-out examples per class than the test split has takes what there
is); what cannot work is an error in the first seconds, not after an hour of extraction.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace

from revelio.activations.capture import extract
from revelio.data.datasets import ImageDataset, load_image_dataset
from revelio.errors import ConfigError, DatasetError
from revelio.models import Backbone
from revelio.release.release_config import ReleaseConfig

log = logging.getLogger(__name__)


def check_settings(config: ReleaseConfig) -> None:
    """Settings that cannot work whatever the data, refused before anything loads."""
    if not config.timesteps:
        raise ConfigError("timesteps is empty: name at least one denoising timestep (--timesteps)")
    if config.with_steering and not config.steering.strengths:
        raise ConfigError("--steering-strengths is empty: give at least one strength, or --no-steering")
    if not config.probes.kinds:
        raise ConfigError("--probe-kinds is empty: name at least one probe kind")
    if config.saes and config.hooks:
        raise ConfigError("with --saes the hook points are the SAEs' own; leave --hooks out")
    if "diff-c" in config.probes.kinds and config.extraction.tokens_per_image is not None:
        raise ConfigError("diff-c probes read whole activation maps, but --extract-tokens-per-image keeps sampled "
                          "locations: leave diff-c out of --probe-kinds, or drop --extract-tokens-per-image")


def fit_to_dataset(config: ReleaseConfig, backbone: Backbone, hooks: list[str]) -> ReleaseConfig:
    """``config`` with the sizes the dataset allows (each change logged), or a DatasetError."""
    columns = {"image_column": config.image_column, "label_column": config.label_column}
    train = load_image_dataset(config.dataset, "train", **columns)
    test = load_image_dataset(config.dataset, config.test_split, **columns)
    if not train.class_names or train.labels is None:
        raise DatasetError(f"{config.dataset} has no class labels; a release needs a labelled dataset (name the label_column)")
    missing = sorted(set(range(len(train.class_names))) - set(test.labels or []))
    if missing:
        raise DatasetError(f"the {config.test_split!r} split of {config.dataset} has no images of "
                           f"{[train.class_names[c] for c in missing]}: every class needs test images")

    def capped(flag: str, value: int, limit: int, what: str) -> int:
        if value > limit:
            log.warning("%s %d is more than %s (%d): using %d", flag, value, what, limit, limit)
        return min(value, limit)

    n_train, n_test = len(train.dataset), len(test.dataset)
    train_images = capped("--train-images", config.train_images, n_train, "the training split holds")
    pooled_images = train_images if config.pooled_train_images is None else capped(
        "--pooled-train-images", config.pooled_train_images, n_train, "the training split holds")
    spatial_rows = train_images * _tokens_per_image(config, backbone, hooks, train)
    return replace(
        config, train_images=train_images, pooled_train_images=config.pooled_train_images and pooled_images,
        test_images=capped("--test-images", config.test_images, n_test, "the test split holds"),
        random_images=capped("--random-images", config.random_images, n_train, "the training split holds"),
        held_out_per_class=capped("--held-out-per-class", config.held_out_per_class, min(Counter(test.labels).values()),
                                  "the test split's smallest class holds"),
        pooled_sae=replace(config.pooled_sae, batch_size=capped(
            "--pooled-sae-batch-size", config.pooled_sae.batch_size, pooled_images, "the rows the pooled SAEs train on")),
        spatial_sae=replace(config.spatial_sae, batch_size=capped(
            "--spatial-sae-batch-size", config.spatial_sae.batch_size, spatial_rows, "the rows the spatial SAEs train on")),
    )


def _tokens_per_image(config: ReleaseConfig, backbone: Backbone, hooks: list[str], train: ImageDataset) -> int:
    """Locations per image at the coarsest hook point (one image, one forward), or the sampled count."""
    if config.extraction.tokens_per_image is not None:
        return config.extraction.tokens_per_image
    image = train.dataset[0][train.image_column]
    acts = extract(backbone, [image], hooks, [config.timesteps[0]], pooling="none", progress=False)
    return min(tokens.shape[1] for tokens in acts.values())
