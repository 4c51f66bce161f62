"""Remove a concept in the app: the release's removal settings, and the prepared removals, bounded and shared.

Removal (:mod:`revelio.steering.removal`) needs each concept's statistics at every hook and every
timestep the sampler visits, from the release's held-out images noised there
(:func:`~revelio.release.removal_measurement.prepare_removal`): about 12 s for 25 steps on the
bundled release on one CPU thread, once per label set and step count. They are prepared on the
first request that needs them, under the model lock (they run the model; a ``gpu`` call on
ZeroGPU, see :mod:`revelio.app.gpu`), one preparation at a time (a second client asking for the
same ones waits and reuses them), and the most recently used are kept while they fit in
:data:`SETUP_BYTES`.

What removes, where and how hard comes from the release's measurement (``metrics/removal.json``):
its app method, hooks, feature count and multiplier; a release without one gets the defaults of
:func:`removal_settings`, and the note says so.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from revelio.app.gpu import gpu
from revelio.app.state import AppState
from revelio.errors import ArtifactFormatError
from revelio.formats.removal import REMOVAL, Removal
from revelio.release.removal_measurement import RemovalSetup, prepare_removal

log = logging.getLogger("revelio.app")

PREPARE_SECONDS = 120  # ZeroGPU's bound on one preparation (100 steps: about 50 s on one CPU thread)
SETUP_BYTES = 256 * 2**20  # prepared removals kept (25 steps on the bundled release: 35 MiB)
DEFAULT_HOOKS = ("mid_block", "up_blocks.0")  # where removal was measured on the pixel default
DEFAULT_FEATURES = 128
DEFAULT_METHOD = "replace"


@dataclass(frozen=True)
class RemovalSettings:
    """How the app removes: ``method`` at ``hooks`` with ``features`` per hook and sampler step
    (``multiplier`` for "ablate"); ``measured`` is the release's removal.json (None: defaults)."""

    method: str
    hooks: tuple[str, ...]
    features: int
    multiplier: float
    steps: int | None  # the step count it was measured at
    measured: Removal | None

    def why(self) -> str:
        """Where these settings come from, and why this method."""
        if self.measured is None:
            return (f"this release has no removal measurement (metrics/removal.json), so the app's defaults are used, not "
                    f"measured here: '{DEFAULT_METHOD}' (the activation where the concept's features fire becomes the "
                    f"other concepts' mean there, which keeps it in the block's distribution; it removed best on the "
                    f"bundled release), at {', '.join(self.hooks)}, {self.features} features per block and step")
        m = self.measured
        return (f"the release's removal measurement (metrics/removal.json, {m.num_inference_steps} steps, "
                f"{m.images_per_source} images per class) chose '{self.method}': {m.app_method_reason}")


def removal_settings(state: AppState) -> RemovalSettings:
    """The release's measured removal setting; without a measurement, 'replace' at the release's
    mid_block and up_blocks.0 where it has them (else its first two hooks) with 128 features: the
    setting measured best on the bundled release."""
    try:
        measured = state.release.read_metrics(REMOVAL, Removal)
    except ArtifactFormatError as err:  # removal still works from the defaults; say why on the server
        log.warning("ignoring the release's removal measurement: %s", err)
        measured = None
    hooks = state.release.hooks
    if measured is not None and all(h in hooks for h in measured.hooks):
        return RemovalSettings(measured.app_method, tuple(measured.hooks), measured.features, measured.multiplier,
                               measured.num_inference_steps, measured)
    default = tuple(h for h in DEFAULT_HOOKS if h in hooks) or tuple(hooks[:2])
    return RemovalSettings(DEFAULT_METHOD, default, DEFAULT_FEATURES, 0.0, None, None)


def label_set_name(state: AppState, label_set: str | None) -> str:
    """The name removal knows a label set by (the default set's own name for None)."""
    return state.view(label_set).label_set_name or "class"


class PreparedRemovals:
    """Prepared removals per (label set, sampler steps): made on first use, shared, bounded in memory."""

    def __init__(self, state: AppState, settings: RemovalSettings, max_bytes: int = SETUP_BYTES) -> None:
        self.state, self.settings, self.max_bytes = state, settings, max_bytes
        self._setups: OrderedDict[tuple[str, int], RemovalSetup] = OrderedDict()
        self._lock = threading.Lock()  # one preparation at a time; never taken while holding the model lock
        self.preparations = 0  # how many were prepared (a test reads it)
        self._prepare = gpu(PREPARE_SECONDS)(prepare_removal)  # runs the model: on ZeroGPU, in the GPU worker

    def has(self, label_set: str, steps: int) -> bool:
        return (label_set, steps) in self._setups

    def get(self, label_set: str, steps: int, on_prepare: Callable[[], None] | None = None) -> RemovalSetup:
        """The prepared removal for ``label_set`` at ``steps`` sampler steps; ``on_prepare()`` is called
        before preparing one (the slow part)."""
        if "none" not in self.state.release.poolings:
            raise ValueError("removing a concept needs spatial SAEs (one code per location: removal works where the "
                             f"concept's features fire); this release has only pooled ones ({self.state.release.poolings})")
        key = (label_set, steps)
        with self._lock:
            if key not in self._setups:
                if on_prepare is not None:
                    on_prepare()
                with self.state.model_lock:
                    setup = self._prepare(self.state.release, self.state.backbone, [label_set], list(self.settings.hooks),
                                            steps)
                self.preparations += 1
                self._setups[key] = setup
                while len(self._setups) > 1 and sum(map(setup_bytes, self._setups.values())) > self.max_bytes:
                    self._setups.popitem(last=False)
            self._setups.move_to_end(key)
            return self._setups[key]


def setup_bytes(setup: RemovalSetup) -> int:
    """The memory a prepared removal holds (its statistics; the SAEs are the release's own)."""
    return sum(tensor.numel() * tensor.element_size()
               for by_hook in setup.statistics.values() for by_t in by_hook.values() for _, stats in by_t.values()
               for tensor in (stats.image_code, stats.labels, stats.mean_tokens, stats.counts))
