"""Steer: the same class and seed generated with and without clamped features, side by side."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from PIL import Image

from revelio.app.classify import classify_probabilities
from revelio.app.state import AppState, Cell
from revelio.steering import FeatureEdit, steer

BASELINE_CACHE_SIZE = 32


@dataclass
class SteeringRequest:
    class_id: int
    seed: int
    steps: int
    guidance: float
    cell: Cell
    features: list[int]
    strength: float  # multiplies each feature's max training activation (0 ablates), or the class map
    window: tuple[int, int]  # (t_high, t_low)
    clamp_to: str = "value"  # "value" (strength x max, everywhere) or "class-map" (strength x target's mean map)
    target: int = 0  # the class whose maps "class-map" clamps to


@dataclass
class SteeringResult:
    baseline: Image.Image
    steered: Image.Image
    baseline_probabilities: dict[str, float]
    steered_probabilities: dict[str, float]
    clamp: dict[int, float | torch.Tensor]


class Generator:
    """Generates under the app's model lock and remembers recent unsteered images (same seed, same picture)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self._baselines: OrderedDict[tuple, Image.Image] = OrderedDict()

    def _generate(self, request: SteeringRequest, edit: FeatureEdit | None) -> Image.Image:
        backbone = self.state.backbone
        kwargs = dict(seed=request.seed, num_inference_steps=request.steps, guidance_scale=request.guidance)
        with self.state.model_lock:
            if edit is None:
                return backbone.generate(request.class_id, **kwargs)[0]
            with steer(backbone, [edit]):
                return backbone.generate(request.class_id, **kwargs)[0]

    def baseline(self, request: SteeringRequest) -> Image.Image:
        key = (request.class_id, request.seed, request.steps, request.guidance)
        with self.state.model_lock:  # also guards the cache against concurrent requests
            if key not in self._baselines:
                self._baselines[key] = self._generate(request, None)
                if len(self._baselines) > BASELINE_CACHE_SIZE:
                    self._baselines.popitem(last=False)
            self._baselines.move_to_end(key)
            return self._baselines[key]

    def clamp_values(self, request: SteeringRequest) -> dict[int, float | torch.Tensor]:
        if request.clamp_to == "class-map":
            maps = self.state.class_maps(request.cell)
            return {f: request.strength * maps.map(request.target, f) for f in request.features}
        peaks = self.state.stats(request.cell).max_activation
        return {f: request.strength * float(peaks[f]) for f in request.features}

    def run(self, request: SteeringRequest) -> SteeringResult:
        if not request.features:
            raise ValueError("pick at least one feature to steer (or use 'Suggest features')")
        clamp = self.clamp_values(request)
        edit = FeatureEdit(self.state.sae(request.cell), clamp=clamp, timesteps=request.window)
        baseline = self.baseline(request)
        steered = self._generate(request, edit)
        probabilities = classify_probabilities(self.state, [baseline, steered])
        return SteeringResult(baseline, steered, probabilities[0], probabilities[1], clamp)
