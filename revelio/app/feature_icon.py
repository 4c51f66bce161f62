"""What a feature draws: the model's neutral condition generated twice from one seed, once as is and
once with only this feature pushed up, as SDXL-unbox's feature icons.

Exemplars say which training images a feature fires on; they cannot tell a feature that *draws* a
sleeve from one that merely co-occurs with sleeves. Pushing the feature up alone, from a condition
that asks for nothing in particular (the empty prompt, the null class, or no condition), shows what
the model makes of it. On a spatial SAE the feature is clamped to its mean activation map over the
held-out images it fires on, scaled so its peak is ``strength`` x the feature's value unit (its largest
training activation, or its publisher's typical activation x k): a constant everywhere draws texture,
where a feature fires is what it draws. On a pooled SAE: ``strength`` x its value unit. Over the Steer
tab's default window, without classifier-free guidance (both branches would see the same neutral
condition). One feature of a small model often changes little, so the difference is shown too, as a
heatmap scaled to its own largest change. Pictures are cached per (SAE, feature).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from revelio.analysis.queries import feature_values
from revelio.app.gpu import GENERATE_SECONDS, gpu
from revelio.app.state import AppState
from revelio.app.steer_request import steering_defaults
from revelio.grid import Cell
from revelio.steering import FeatureEdit, steer
from revelio.steering.selection import value_unit

ICON_STRENGTH = 10.0  # measured on both bundled releases: the change lands where the feature's map is
ICON_SEED = 0
ICON_CACHE_SIZE = 128


@dataclass(frozen=True)
class FeatureIcon:
    """One feature's picture beside the same seed's unedited image."""

    baseline: Image.Image
    drawn: Image.Image

    def difference(self) -> torch.Tensor:
        """[H, W]: how far each pixel moved, mean over channels, in 0..255."""
        drawn = torch.from_numpy(np.asarray(self.drawn.convert("RGB"), dtype=np.float32))
        baseline = torch.from_numpy(np.asarray(self.baseline.convert("RGB"), dtype=np.float32))
        return (drawn - baseline).abs().mean(-1)


def neutral_condition(state: AppState) -> tuple[Any, str]:
    """(condition, in words): what the model generates from when asked for nothing in particular.
    A class-conditional model without a null class has none; it draws from its first class then."""
    backbone = state.backbone
    if backbone.conditioning == "text":
        return "", "the empty prompt"
    if backbone.conditioning == "class":
        if getattr(backbone, "null_class", None) is not None:
            return None, "no class (the model's null class)"
        names = backbone.class_names or ["0"]
        return 0, f"class {names[0]!r} (this model has no null class to generate unconditionally)"
    return None, "no condition"


class FeatureIcons:
    """Draws (and remembers) what features draw, under the app's model lock."""

    def __init__(self, state: AppState, strength: float = ICON_STRENGTH, seed: int = ICON_SEED) -> None:
        self.state, self.strength, self.seed = state, strength, seed
        self.steps = min(25, state.backbone.default_num_inference_steps)
        self._neutral, self.condition = neutral_condition(state)  # what is generated, and it in words
        self.window = steering_defaults(state).window
        self._icons: OrderedDict[tuple[Cell, int], FeatureIcon] = OrderedDict()
        self._baseline: Image.Image | None = None
        self._lock = threading.Lock()  # guards the cache; generation itself holds the model lock
        self._sample = gpu(GENERATE_SECONDS)(self._sample_image)

    def icon(self, cell: Cell, feature: int) -> FeatureIcon:
        """The picture of ``feature`` of the SAE at ``cell`` (an id already checked against it)."""
        key = (cell, feature)
        with self._lock:
            if key in self._icons:
                self._icons.move_to_end(key)
                return self._icons[key]
        clamp = self.strength * self.clamp_unit(cell, feature)
        with self.state.model_lock:
            if self._baseline is None:
                self._baseline = self._sample(self._neutral, None, None)
            drawn = self._sample(self._neutral, cell, {feature: clamp if clamp.ndim else float(clamp)})
        icon = FeatureIcon(self._baseline, drawn)
        with self._lock:
            self._icons[key] = icon
            if len(self._icons) > ICON_CACHE_SIZE:
                self._icons.popitem(last=False)
        return icon

    @torch.no_grad()
    def clamp_unit(self, cell: Cell, feature: int) -> torch.Tensor:
        """What strength 1 clamps ``feature`` to: its mean map [side, side] over the held-out images it
        fires on, peaking at its value unit (spatial SAEs; zeros if it fires on none), else its value
        unit (a 0-d tensor)."""
        sae = self.state.sae(cell)
        if cell.pooling != "none":
            return value_unit(sae)[feature].float()
        values = feature_values(sae.encode(self.state.held_out_tokens(cell.hook, cell.timestep)), feature)  # [N, T]
        fired = values[values.amax(-1) > 0]
        side = round(values.shape[1] ** 0.5)
        if not len(fired):
            return torch.zeros(side, side)
        mean = fired.mean(0)
        return (mean / mean.max() * value_unit(sae)[feature].float()).reshape(side, side)

    def _sample_image(self, condition: Any, cell: Cell | None, clamp: dict[int, torch.Tensor | float] | None) -> Image.Image:
        # builds the edit itself: on ZeroGPU this runs in the GPU worker, with pickled arguments
        backbone = self.state.backbone
        kwargs = {"seed": self.seed, "num_inference_steps": self.steps, "guidance_scale": 1.0}
        if cell is None or clamp is None:
            return backbone.generate(condition, **kwargs)[0]
        with steer(backbone, [FeatureEdit(self.state.sae(cell), clamp=clamp, timesteps=self.window)]):
            return backbone.generate(condition, **kwargs)[0]
