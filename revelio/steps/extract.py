"""Activations of a backbone over a labelled dataset into an on-disk cache, for SAEs and probes.

One pass over the data serves every (hook, timestep) and both poolings: spatial tokens are
captured once and their mean is the pooled vector. The images are cut into parts of
``part_images``; each part is a complete small cache under ``parts/``, written once, so a killed
run resumes at its first unfinished part, and under ``accelerate launch`` (or torchrun) each
process writes every n-th part. When all parts exist, the cache root gets one manifest per cell
listing the parts' shards in order (one logical cache, equal to a single-process run),
``dataset.json`` (this config plus what was found: columns, class names, image count) and
``labels.safetensors`` (each cache image's label and its row in the dataset split).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace

import torch
from accelerate import PartialState

from revelio.cache import find_cells
from revelio.data.datasets import load_image_dataset
from revelio.data.fingerprint import fingerprint
from revelio.errors import ConfigError
from revelio.layout import DATASET_FILE, EXTRACTION_RUN_FILE, LABELS_FILE, PARTS_DIR
from revelio.models import Backbone, load_backbone
from revelio.steps.extract_parts import finished_parts, merge, write_parts
from revelio.steps.extraction_config import ExtractionConfig
from revelio.steps.runs import check_same_command

log = logging.getLogger(__name__)


def extract_to_cache(config: ExtractionConfig, backbone: Backbone | None = None) -> dict:
    """Run (or resume, or finish) the extraction; returns a summary (cache root, images, cells).

    A caller that already holds ``config.backbone`` loaded passes it (not for ``random_weights``,
    which re-initialises the model it is given)."""
    if backbone is not None and config.random_weights:
        raise ConfigError("random_weights re-initialises the backbone; let extract_to_cache load its own copy")
    config = with_inputs(config)
    state = PartialState(cpu=not torch.cuda.is_available() or config.device == "cpu")
    if config.overwrite and state.is_main_process and config.out.is_dir():
        for cell in find_cells(config.out):  # merged manifests list shards of the parts removed below
            shutil.rmtree(config.out / cell.path, ignore_errors=True)
        for name in (PARTS_DIR, EXTRACTION_RUN_FILE, DATASET_FILE, LABELS_FILE):
            shutil.rmtree(config.out / name, ignore_errors=True) if (config.out / name).is_dir() else (config.out / name).unlink(missing_ok=True)
    state.wait_for_everyone()
    check_same_command(config, config.out / EXTRACTION_RUN_FILE, "an extraction", ignore=("overwrite",), record=state.is_main_process)
    state.wait_for_everyone()
    # each process on its own GPU under accelerate/torchrun ("cuda" alone would put all on cuda:0)
    device = state.device if state.device.type == "cuda" and config.device in (None, "cuda") else config.device
    backbone = backbone or load_backbone(config.backbone, device=device, revision=config.revision)
    if config.random_weights:
        backbone.randomize_weights(seed=config.seed)
    data = load_image_dataset(config.dataset, config.split, config.image_column, config.label_column, config.limit,
                              config.seed, streaming=config.streaming)
    hooks = config.hooks or backbone.hook_points
    done = finished_parts(config.out)
    mine = lambda part: part % state.num_processes == state.process_index and part not in done  # noqa: E731
    written = write_parts(config, backbone, data, hooks, mine)
    state.wait_for_everyone()
    summary = {"cache": str(config.out), "parts_written_here": written}
    if state.is_main_process:
        summary |= merge(config, data, hooks, backbone)
        log.info(json.dumps(summary))
    state.wait_for_everyone()
    return summary


def with_inputs(config: ExtractionConfig) -> ExtractionConfig:
    """The config with the fingerprints of its dataset and model, so changed files are a changed command."""
    if config.inputs:
        return config
    return replace(config, inputs=f"dataset {fingerprint(config.dataset)}, model {fingerprint(config.backbone, config.revision)}")
