"""The Steer tab's generation service: baseline, steered and concept-removed images under the app's model lock.

One service per app, shared by Steer and Remove: it remembers recent unsteered images (the same
condition, seed and sampler settings give the same picture, so a second Generate with other
features, or a removal from the same image, reuses its baseline), runs each generation as a
``gpu``-decorated call (ZeroGPU, see :mod:`revelio.app.gpu`) and reports each denoising step as it
starts. A steering request clamps features of its main SAE and of every further SAE it names
(``SteeringRequest.also``: the target's suggested features there, with the same count, clamp mode,
value, window and mask), all in one generation.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from PIL import Image

from revelio.activations.hooks import forward_timestep
from revelio.app.gpu import GENERATE_SECONDS, gpu
from revelio.app.state import AppState
from revelio.app.steer_advice import suggested
from revelio.app.steer_request import Clamp, Sampling, SteeringRequest
from revelio.grid import Cell
from revelio.steering import FeatureEdit, steer
from revelio.steering.edits import Edit
from revelio.steering.selection import clamp_targets, value_unit

BASELINE_CACHE_SIZE = 32
BASELINE = "baseline (same seed, nothing clamped)"
Clamps = dict[Cell, Clamp]  # what each feature of each steered SAE is clamped to (the main SAE first)


@contextlib.contextmanager
def denoising_steps(denoiser: torch.nn.Module, on_step: Callable[[int], None] | None) -> Iterator[None]:
    """Call ``on_step(i)`` as the i-th denoising step (1, 2, ...) starts: a forward pre-hook on the
    denoiser counts each new timestep it is called at (classifier-free guidance may call it twice
    per step). Where the model runs in another process (ZeroGPU) the hook never fires."""
    if on_step is None:
        yield
        return
    seen: list[Any] = []

    def count(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        t = forward_timestep(args, kwargs)
        t = float(t.flatten()[0]) if isinstance(t, torch.Tensor) and t.numel() else t
        if not seen or seen[-1] != t:
            seen.append(t)
            on_step(len(seen))

    handle = denoiser.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


class GenerationService:
    """Generates under the app's model lock and remembers recent unsteered images (same seed, same picture)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self._baselines: OrderedDict[tuple, Image.Image] = OrderedDict()
        self._sample = gpu(GENERATE_SECONDS)(self._sample_image)

    def generate(self, request: Sampling, clamps: Clamps | None, on_step: Callable[[int], None] | None = None,
                 edits: list[Edit] | None = None) -> Image.Image:
        """One image; steered when ``clamps`` says what to clamp each feature of each SAE to (a
        :class:`SteeringRequest`'s window and mask apply), edited by ``edits`` (e.g. a concept's removal)."""
        with self.state.model_lock, denoising_steps(self.state.backbone.denoiser, on_step):
            return self._sample(request, clamps, edits)

    def _sample_image(self, request: Sampling, clamps: Clamps | None, edits: list[Edit] | None = None) -> Image.Image:
        # builds the clamps' edits itself: on ZeroGPU this runs in the GPU worker, with pickled arguments
        backbone = self.state.backbone
        kwargs = {"seed": request.seed, "num_inference_steps": request.steps, "guidance_scale": request.guidance,
                  "negative_prompt": request.negative_prompt}
        edits = list(edits or [])
        if clamps:
            if not isinstance(request, SteeringRequest):
                raise TypeError("clamps need a SteeringRequest (its window and mask)")
            edits += [FeatureEdit(self.state.sae(cell), clamp=clamp, timesteps=request.window, mask=request.mask)
                      for cell, clamp in clamps.items() if clamp]
        if not edits:  # no hooks at all on the unsteered run
            return backbone.generate(request.condition, **kwargs)[0]
        with steer(backbone, edits):
            return backbone.generate(request.condition, **kwargs)[0]

    def _key(self, request: Sampling) -> tuple:
        return (request.condition, request.negative_prompt, request.seed, request.steps, request.guidance)

    def has_baseline(self, request: Sampling) -> bool:
        return self._key(request) in self._baselines

    def baseline(self, request: Sampling, on_step: Callable[[int], None] | None = None) -> Image.Image:
        key = self._key(request)
        with self.state.model_lock:  # also guards the cache against concurrent requests
            if key not in self._baselines:
                self._baselines[key] = self.generate(request, None, on_step)
                if len(self._baselines) > BASELINE_CACHE_SIZE:
                    self._baselines.popitem(last=False)
            self._baselines.move_to_end(key)
            return self._baselines[key]

    def clamp(self, request: SteeringRequest, cell: Cell | None = None, features: list[int] | None = None) -> Clamp:
        """What each feature of the request (or ``features`` of a further SAE ``cell``) is clamped to."""
        cell, features = cell or request.cell, request.features if features is None else features
        if not features and cell == request.cell:
            raise ValueError("pick at least one feature to steer (or use 'Suggest features')")
        target = request.target
        maps = {"class-map": self.state.class_maps, "exemplar": self.state.exemplar_maps}.get(request.clamp_to)
        maps = maps(cell, target.label_set) if maps else None
        return clamp_targets(features, request.strength, self.state.stats(cell, target.label_set), maps,
                             target.index, value_unit(self.state.sae(cell)))

    def clamps(self, request: SteeringRequest) -> Clamps:
        """The main SAE's clamp, then each further SAE's: the target's suggested features there, as many
        as the main SAE's (fewer, or none, where fewer qualify), clamped the same way."""
        clamps = {request.cell: self.clamp(request)}
        for cell in request.also:
            clamps[cell] = self.clamp(request, cell, suggested(self.state, cell, request.target, len(request.features)))
        return clamps

    def run(self, request: SteeringRequest, progress: Callable[..., Any] | None = None
            ) -> tuple[Image.Image, Image.Image, Clamps]:
        """(baseline, steered image, what each feature of each SAE was clamped to); ``progress(done,
        total, what)`` after each denoising step (and as each phase starts)."""
        clamps = self.clamps(request)
        report = progress or (lambda *_: None)
        cached = self.has_baseline(request)
        total = request.steps * (1 if cached else 2)
        if not cached:
            report(0, total, BASELINE)
        baseline = self.baseline(request, lambda i: report(i - 1, total, BASELINE))
        done = 0 if cached else request.steps
        report(done, total, "steered")
        steered = self.generate(request, clamps, lambda i: report(done + i - 1, total, "steered"))
        report(total, total, "probe")
        return baseline, steered, clamps
