"""Every file and folder name revelio writes, in one place at the bottom layer.

Caches, build steps, releases and the app agree on names only through this module, so no
reader spells a file name its writer chose. A release::

  README.md                              model card
  release.json                           revelio.formats.release.ReleaseInfo
  model/                                 the backbone, when it is not on the Hub
  saes/<hook>/t<timestep>/<pooling>/     config.json, model.safetensors, stats.safetensors, timesteps.safetensors
  probes/<hook>/t<timestep>/<kind>/      config.json, model.safetensors
  reference_classifier/                  config.json, model.safetensors (class-conditional backbones)
  exemplars/thumbnails.safetensors       training images that are top exemplars of some feature
  exemplars/held_out.safetensors         labelled test images for histograms and examples
  metrics/<name>.json, plots/*.png       grid metrics (revelio.formats.metrics) and their pictures
  label_sets/<column>/                   each further label set: its probes/, metrics/, plots/ and
                                         saes/<hook>/t<timestep>/<pooling>/stats.safetensors
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from revelio.grid import Cell

# --- an artifact folder (SAE, probe, reference classifier) ---------------------------------------
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATS_FILE = "stats.safetensors"  # an SAE's feature statistics
TIMESTEPS_FILE = "timesteps.safetensors"  # an SAE's mean activation at every timestep of its release
SOURCE_STATS_FILE = "source_stats.safetensors"  # an imported SAE's per-feature statistics from its source (SDXL-unbox mean.pt/std.pt)

# --- an activation cache ---------------------------------------------------------------------
MANIFEST_FILE = "manifest.json"  # one cell's shards
DATASET_FILE = "dataset.json"  # a cache root: revelio.formats.cache.CacheDataset
LABELS_FILE = "labels.safetensors"  # "labels" (the default label set), "dataset_index", label_set_key(column) for the others
PARTS_DIR = "parts"
DONE_FILE = "done.json"  # a finished part of an extraction
EXTRACTION_RUN_FILE = "extraction.json"  # the command a cache root was extracted with

# --- the default model's trainer ----------------------------------------------------------------
PIPELINE_DIR = "pipeline"
CHECKPOINT_FILE = "checkpoint.safetensors"
TRAINING_RUN_FILE = "training.json"
TRAINING_LOG_FILE = "training_log.jsonl"

# --- a release ----------------------------------------------------------------------------------
RELEASE_FILE = "release.json"
CARD_FILE = "README.md"
MODEL_DIR = "model"
MODEL_INDEX_FILE = "model_index.json"  # a diffusers pipeline folder
SAES_DIR = "saes"
PROBES_DIR = "probes"
REFERENCE_CLASSIFIER_DIR = "reference_classifier"
EXEMPLARS_FILE = "exemplars/thumbnails.safetensors"
HELD_OUT_FILE = "exemplars/held_out.safetensors"
METRICS_DIR = "metrics"
PLOTS_DIR = "plots"
LABEL_SETS_DIR = "label_sets"
SAMPLES_PLOT = "samples.png"

# metrics/<name>.json, one schema each in revelio.formats.metrics
PROBE_GRID = "probe_grid"
SAE_GRID = "sae_grid"
QUALITY_GATE = "quality_gate"
MONOSEMANTICITY = "monosemanticity"
STEERING = "steering"
REMOVAL = "removal"  # revelio.formats.removal.Removal


def label_set_key(column: str) -> str:
    """The tensor of a further label set's labels in a cache's or a release's labels file."""
    return f"labels.{column}"


def label_set_dir(root: Path, label_set: str | None) -> Path:
    """Where a label set's probes, metrics, plots and feature statistics live (the default set: the root)."""
    return Path(root) if label_set is None else Path(root) / LABEL_SETS_DIR / label_set


def metrics_file(root: Path, name: str, suffix: str = ".json") -> Path:
    return Path(root) / METRICS_DIR / f"{name}{suffix}"


def sae_subfolder(cell: Cell) -> str:
    if cell.pooling is None:
        raise ValueError(f"an SAE cell needs a pooling; got {cell!r}")
    return f"{SAES_DIR}/{cell.path}"


def sae_cells(root: Path) -> list[Cell]:
    """Every cell of a release (or SAE grid) folder that holds an SAE, in a stable order."""
    saes = Path(root) / SAES_DIR
    return sorted(Cell.from_path(p.parent.relative_to(saes).as_posix()) for p in saes.glob(f"*/t*/*/{CONFIG_FILE}"))


def probe_subfolder(cell: Cell, kind: str) -> str:
    return f"{PROBES_DIR}/{Cell(cell.hook, cell.timestep).path}/{kind}"


@dataclass(frozen=True)
class GridPlot:
    """A picture of one metric over the grid: ``plots/<family>_<metric>_<variant>.png``.

    Probe accuracy pictures are ``probe_accuracy_<features>_<kind>``, SAE ones
    ``sae_<metric>_<pooling>``; the app reads them back with :meth:`from_name` instead of parsing
    names by hand.
    """

    family: str  # "probe" or "sae"
    metric: str  # "accuracy", "normalized_mse", "dead_fraction"
    features: str  # probes: "diffusion", "random-weights"; SAEs: ""
    variant: str  # probes: the kind; SAEs: the pooling

    _PROBE = re.compile(r"probe_accuracy_(?P<features>diffusion|random-weights|pixels)_(?P<variant>[\w-]+)")
    _SAE = re.compile(r"sae_(?P<metric>\w+?)_(?P<variant>mean|none)")

    @property
    def name(self) -> str:
        if self.family == "probe":
            return f"probe_{self.metric}_{self.features}_{self.variant}"
        return f"sae_{self.metric}_{self.variant}"

    def path(self, root: Path) -> Path:
        return Path(root) / PLOTS_DIR / f"{self.name}.png"

    @classmethod
    def probe_accuracy(cls, features: str, kind: str) -> GridPlot:
        return cls("probe", "accuracy", features, kind)

    @classmethod
    def sae_metric(cls, metric: str, pooling: str) -> GridPlot:
        return cls("sae", metric, "", pooling)

    @classmethod
    def from_name(cls, stem: str) -> GridPlot | None:
        """The grid picture a file stem names, or None for other pictures (samples, curves)."""
        if match := cls._PROBE.fullmatch(stem):
            return cls.probe_accuracy(match["features"], match["variant"])
        if match := cls._SAE.fullmatch(stem):
            return cls.sae_metric(match["metric"], match["variant"])
        return None
