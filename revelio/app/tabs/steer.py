"""Steer: the same condition and seed generated with and without clamped features, side by side.

The condition is whatever the backbone generates from (a prompt and negative prompt, one of its
own classes, or nothing); the target class of suggestions and class maps is one of the release's
classes (the dataset's labels, which the probes predict). On a spatial SAE a painted mask limits
the clamp to a region of the image.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from revelio.app.cell_picker import cell_inputs, follow_cell
from revelio.app.conditions import (
    condition_inputs,
    generation_condition,
    guidance_range,
)
from revelio.app.gpu import GENERATE_SECONDS, gpu
from revelio.app.rendering import PROBE_KINDS, display_side, to_display
from revelio.app.state import AppState
from revelio.app.uploads import read_upload_raw, upload_path
from revelio.app.validation import class_id, feature_ids, number, whole, wire
from revelio.data.images import ImageError
from revelio.grid import Cell
from revelio.steering import FeatureEdit, steer
from revelio.steering.selection import clamp_targets, steering_features

BASELINE_CACHE_SIZE = 32
# Limits shared by the sliders and the checks (API clients can send anything).
STEPS = (1, 100)
STRENGTH = (-5.0, 10.0)
SEEDS = (0, 2**31 - 1)
SUGGEST = (1, 64)
COUNT_SLIDER = (1, 32)  # the "How many" slider; API clients may ask for up to SUGGEST[1]
CLASS_MAP = ("the target class's mean map × value (spatial SAEs)", "class-map")
VALUE = ("value × the feature's largest training activation (0 switches it off)", "value")
CLAMP_MODES = [CLASS_MAP, VALUE]
MASK_HELP = ("**Where to clamp** (spatial SAEs): paint over the part of the image to steer; nothing painted "
             "clamps everywhere. After a Generate the baseline appears here to paint on.")
PROBE_HELP = ("Probe: the release's best classifier on the model's own activations (block {hook}, t={t}, "
              "{kind} probe), given each image: what the model itself sees in it.")


def clamp_modes(pooling: Any) -> list[tuple[str, str]]:
    """The clamp modes that apply to an SAE: class maps only where there is a map (spatial SAEs)."""
    return CLAMP_MODES if pooling == "none" else [VALUE]


def clamp_mode(value: Any, pooling: str = "none") -> str:
    """One of the CLAMP_MODES values, and one that applies to the SAE."""
    modes = [mode for _, mode in CLAMP_MODES]
    if value not in modes:
        raise ValueError(f"clamp to one of {modes}; got {value!r:.60}")
    if value == "class-map" and pooling != "none":
        raise ValueError("clamping to a class's map needs a spatial SAE (a pooled SAE has one code per image, no map); "
                         "choose the spatial SAE or clamp to a value")
    return value


@dataclass
class SteeringRequest:
    """One checked Generate request."""

    condition: str | int | None  # what the backbone generates from: a prompt, one of its classes, nothing
    negative_prompt: str | None  # text models only
    seed: int
    steps: int
    guidance: float
    cell: Cell
    features: list[int]
    strength: float  # multiplies each feature's max training activation (0 ablates), or the class map
    window: tuple[int, int]  # (t_high, t_low)
    clamp_to: str  # "value" (strength x max, everywhere) or "class-map" (strength x target's mean map)
    target: int  # the class whose maps "class-map" clamps to
    mask: torch.Tensor | None = None  # [H, W] in [0, 1]: where the clamp applies (None: everywhere)


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
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        t = float(t.flatten()[0]) if isinstance(t, torch.Tensor) and t.numel() else t
        if not seen or seen[-1] != t:
            seen.append(t)
            on_step(len(seen))

    handle = denoiser.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


class Generator:
    """Generates under the app's model lock and remembers recent unsteered images (same seed, same picture)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self._baselines: OrderedDict[tuple, Image.Image] = OrderedDict()
        self._sample = gpu(GENERATE_SECONDS)(self._sample_image)

    def generate(self, request: SteeringRequest, clamp: dict[int, float | torch.Tensor] | None,
                 on_step: Callable[[int], None] | None = None) -> Image.Image:
        """One image; steered when ``clamp`` says what to clamp each feature of the request's SAE to."""
        with self.state.model_lock, denoising_steps(self.state.backbone.denoiser, on_step):
            return self._sample(request, clamp)

    def _sample_image(self, request: SteeringRequest, clamp: dict[int, float | torch.Tensor] | None) -> Image.Image:
        # builds the edit itself: on ZeroGPU this runs in the GPU worker, with pickled arguments
        backbone = self.state.backbone
        kwargs = {"seed": request.seed, "num_inference_steps": request.steps, "guidance_scale": request.guidance,
                  "negative_prompt": request.negative_prompt}
        if clamp is None:  # no hooks at all on the unsteered run
            return backbone.generate(request.condition, **kwargs)[0]
        edit = FeatureEdit(self.state.sae(request.cell), clamp=clamp, timesteps=request.window, mask=request.mask)
        with steer(backbone, [edit]):
            return backbone.generate(request.condition, **kwargs)[0]

    def _key(self, request: SteeringRequest) -> tuple:
        return (request.condition, request.negative_prompt, request.seed, request.steps, request.guidance)

    def has_baseline(self, request: SteeringRequest) -> bool:
        return self._key(request) in self._baselines

    def baseline(self, request: SteeringRequest, on_step: Callable[[int], None] | None = None) -> Image.Image:
        key = self._key(request)
        with self.state.model_lock:  # also guards the cache against concurrent requests
            if key not in self._baselines:
                self._baselines[key] = self.generate(request, None, on_step)
                if len(self._baselines) > BASELINE_CACHE_SIZE:
                    self._baselines.popitem(last=False)
            self._baselines.move_to_end(key)
            return self._baselines[key]

    def clamp(self, request: SteeringRequest) -> dict[int, float | torch.Tensor]:
        """What each feature of the request is clamped to."""
        if not request.features:
            raise ValueError("pick at least one feature to steer (or use 'Suggest features')")
        maps = self.state.class_maps(request.cell) if request.clamp_to == "class-map" else None
        return clamp_targets(request.features, request.strength, self.state.stats(request.cell), maps, request.target)

    def run(self, request: SteeringRequest, progress: Callable[..., Any] | None = None
            ) -> tuple[Image.Image, Image.Image, dict[int, float | torch.Tensor]]:
        """(baseline, steered image, what each feature was clamped to); ``progress(done, total, what)``
        after each denoising step (and as each phase starts)."""
        clamp = self.clamp(request)
        report = progress or (lambda *_: None)
        cached = self.has_baseline(request)
        total = request.steps * (1 if cached else 2)
        if not cached:
            report(0, total, "baseline (same seed, nothing clamped)")
        baseline = self.baseline(request, lambda i: report(i - 1, total, "baseline (same seed, nothing clamped)"))
        done = 0 if cached else request.steps
        report(done, total, "steered")
        steered = self.generate(request, clamp, lambda i: report(done + i - 1, total, "steered"))
        report(total, total, "probe")
        return baseline, steered, clamp


@dataclass(frozen=True)
class SteeringDefaults:
    """What the Steer tab starts with: the SAE, how many features, how hard, and when."""

    cell: Cell
    count: int
    strength: float
    window: tuple[int, int]  # (t_high, t_low)


def steering_defaults(state: AppState) -> SteeringDefaults:
    """The setting the release's steering measurement (metrics/steering.json) chose within its
    side-effect budget, when it measured one spatial SAE of this release clamped to class maps.
    Otherwise the last decoder block (highest resolution, which shapes the image most directly) at
    the default timestep, 16 features at twice their class maps, over the high-noise half of the
    schedule (where class shape is decided, at half the cost of every step)."""
    default, steps = state.default_cell, state.backbone.num_train_timesteps
    fallback = SteeringDefaults(Cell(state.release.hooks[-1], default.timestep, default.pooling), 16, 2.0,
                                (steps - 1, steps // 2))
    if "steering" not in state.release.metric_names():
        return fallback
    measured = state.release.metrics("steering")
    if not (measured.get("within_budget") and measured.get("pooling") == "none"
            and measured.get("clamp_to") == "class-map" and len(measured.get("cells", [])) == 1):
        return fallback
    hook, _, timestep = measured["cells"][0].rpartition(":")
    try:
        cell = state.cell(hook, timestep, "none")
    except ValueError:  # measured on SAEs this release no longer has
        return fallback
    high, low = measured["window"]
    return SteeringDefaults(cell, min(int(measured["features_per_class"]), COUNT_SLIDER[1]), float(measured["strength"]),
                            (min(int(high), steps - 1), max(int(low), 0)))


class SteerTab:
    """The Steer tab: its events (a shared baseline cache behind them) and its layout."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.generator = Generator(state)
        self.mask_editor: gr.ImageEditor | None = None

    # --- events -------------------------------------------------------------------------------
    def suggest(self, hook: str, timestep: Any, pooling: str, target: Any, count: Any) -> list[int]:
        """The features that steer towards a class: from its class maps on spatial SAEs; on pooled
        ones every feature whose dominant label it is counts, however spread its activation (there
        may be fewer than asked: the message says so)."""
        cell = self.state.cell(hook, timestep, pooling)
        count = whole(count, "number of features", *SUGGEST)
        target = class_id(self.state, target)
        maps = self.state.class_maps(cell) if cell.pooling == "none" else None
        found = steering_features(self.state.stats(cell), target, count, maps=maps, min_purity=0.0)
        if len(found) < count:
            name = self.state.class_names[target]
            gr.Info(f"Only {len(found)} of this pooled SAE's features have {name} as their main class, so "
                    f"{len(found)} are suggested, not {count}." if maps is None else
                    f"Only {len(found)} features of this SAE are more active on {name} than elsewhere; "
                    f"{len(found)} are suggested, not {count}.")
        return found

    def steer(self, condition: Any, seed: Any, steps: Any, guidance: Any, hook: str, timestep: Any, pooling: str,
              features: Any, clamp_to: Any, target: Any, strength: Any, t_high: Any, t_low: Any,
              negative_prompt: Any = None, mask: Any = None, progress: Any = gr.Progress()) -> tuple:  # noqa: B008 - Gradio's way
        """Baseline and steered images, the probe's view of each, and a note of what was clamped."""
        request = self.request(condition, seed, steps, guidance, hook, timestep, pooling, features, clamp_to, target,
                               strength, t_high, t_low, negative_prompt, mask)

        def report(done: int, total: int, what: str) -> None:
            progress((max(0, done), total), desc=f"Generating: {what}", unit="steps")

        baseline, steered, clamp = self.generator.run(request, report)
        before, after = self.state.probabilities([baseline, steered])
        side = display_side(self.state.backbone.resolution)
        return to_display(baseline, side), to_display(steered, side), before, after, self.note(request, clamp)

    def request(self, condition: Any, seed: Any, steps: Any, guidance: Any, hook: str, timestep: Any, pooling: str,
                features: Any, clamp_to: Any, target: Any, strength: Any, t_high: Any, t_low: Any,
                negative_prompt: Any = None, mask: Any = None) -> SteeringRequest:
        """The checked request (ValueError saying what was wrong with any input)."""
        cell = self.state.cell(hook, timestep, pooling)
        condition, negative_prompt = generation_condition(self.state.backbone, condition, negative_prompt)
        last = self.state.backbone.num_train_timesteps - 1
        high = whole(t_high, "window start (t high)", 0, last)
        low = whole(t_low, "window end (t low)", 0, last)
        if low > high:
            raise ValueError(f"the window runs from t high down to t low; got t high {high} < t low {low}")
        return SteeringRequest(
            condition=condition, negative_prompt=negative_prompt, seed=whole(seed, "seed", *SEEDS),
            steps=whole(steps, "steps", *STEPS), guidance=number(guidance, "guidance", *guidance_range(self.state.backbone)),
            cell=cell, features=feature_ids(self.state, cell, features), strength=number(strength, "clamp value", *STRENGTH),
            window=(high, low), clamp_to=clamp_mode(clamp_to, cell.pooling), target=class_id(self.state, target),
            mask=self.read_mask(mask),
        )

    def note(self, request: SteeringRequest, clamp: dict[int, float | torch.Tensor]) -> str:
        names, cell = self.state.class_names, request.cell
        target_name = names[request.target] if request.target < len(names) else request.target
        clamps = ", ".join(
            f"{self.state.feature_label(cell, f)} → "
            + (f"{request.strength:g} × its {target_name} map" if isinstance(v, torch.Tensor) else f"{v:.3g}")
            for f, v in clamp.items())
        where = (f" inside the painted mask ({100 * float(request.mask.mean()):.0f}% of the image)"
                 if request.mask is not None else "")
        return f"Clamped at {cell}{where}, from t={request.window[0]} down to t={request.window[1]}: {clamps}"

    def read_mask(self, payload: Any) -> torch.Tensor | None:
        """A mask ([H, W] in [0, 1]) from the painter's value: where its layers are painted (opaque;
        a layer without transparency, such as an uploaded black-and-white image, by its brightness).
        None when nothing is painted: the clamp then applies everywhere."""
        if payload in (None, "", {}):
            return None
        if not isinstance(payload, dict):
            raise ValueError("the mask must be the painter's value: {'background': None, 'layers': [an uploaded image], "  # noqa: TRY004
                             "'composite': None}")
        layers = payload.get("layers") or []
        if not isinstance(layers, list):
            raise ValueError("the mask's 'layers' must be a list of uploaded images")  # noqa: TRY004 - a user error
        images = [read_upload_raw(layer) for layer in layers if layer]
        blob = payload.get("id") and self.mask_editor is not None and self.mask_editor.blob_storage.pop(payload["id"], None)
        if blob:  # the browser sent the layers to the editor's blob store first
            images += [_decode(data) for data in blob.layers if data]
        masks = [m for m in map(self._image_mask, images) if m is not None]
        if not masks:
            return None
        side = max(m.shape[0] for m in masks)
        return torch.stack([_resize(m, side) for m in masks]).amax(0)

    @staticmethod
    def _image_mask(image: Image.Image) -> torch.Tensor | None:
        """Where a layer is marked: its opacity when it has some transparency, else its brightness
        (white clamps, black leaves alone); None when nothing is marked."""
        alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255 if "A" in image.getbands() else None
        if alpha is not None and alpha.min() < 1:
            values = alpha
        else:
            values = np.asarray(image.convert("L"), dtype=np.float32) / 255
        if values.max() <= 0.02:  # nothing painted
            return None
        return torch.from_numpy((values > 0.02).astype(np.float32))

    def cell_changed(self, pooling: Any, clamp_to: Any) -> tuple:
        """Clamp modes and the mask painter for the chosen SAE (UI only): class maps and masks where
        they apply (spatial SAEs); switching to a pooled SAE switches class-map clamping to a value."""
        spatial = pooling == "none"
        mode = clamp_to if clamp_to in [m for _, m in clamp_modes(pooling)] else "value"
        painter = gr.ImageEditor(visible=True) if spatial else gr.ImageEditor(value=None, visible=False)
        return gr.Radio(choices=clamp_modes(pooling), value=mode), painter, gr.Markdown(visible=spatial)

    def paint_on(self, baseline: Any, mask: Any) -> Any:
        """After a Generate without a mask, the baseline becomes the painter's background."""
        if self.read_mask_quietly(mask) is not None or not isinstance(baseline, dict):
            return gr.skip()
        try:
            path = str(upload_path(baseline))
        except ImageError:
            return gr.skip()
        return {"background": path, "layers": [], "composite": path}

    def read_mask_quietly(self, mask: Any) -> torch.Tensor | None:
        try:
            return self.read_mask(mask) if not (isinstance(mask, dict) and mask.get("id")) else torch.ones(1, 1)
        except ValueError:
            return None

    # --- layout -------------------------------------------------------------------------------
    def build(self) -> None:
        state = self.state
        classes = [(name, i) for i, name in enumerate(state.class_names)]
        target_class = 1 if len(classes) > 1 else 0
        last = state.backbone.num_train_timesteps - 1
        defaults = steering_defaults(state)
        steer_cell = defaults.cell
        suggested = (self.suggest(steer_cell.hook, steer_cell.timestep, steer_cell.pooling, target_class, defaults.count)
                     if classes else [])
        side = display_side(state.backbone.resolution)
        spatial = steer_cell.pooling == "none"
        best = state.release.info.best_cell
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=320):
                condition, negative_prompt = condition_inputs(state)
                generate = gr.Button("Generate", variant="primary")
                status = gr.Markdown("Generates the baseline (same seed, nothing clamped, reused when unchanged) "
                                     "and the steered image; progress shows here.", elem_classes=["revelio-status"])
                with gr.Accordion("Sampling: seed, steps, guidance", open=False):
                    seed = gr.Number(0, precision=0, label=f"Seed (0..{SEEDS[1]})", minimum=SEEDS[0], maximum=SEEDS[1])
                    steps = gr.Slider(*STEPS, 25, step=1, label="Denoising steps")
                    guidance = gr.Slider(*guidance_range(state.backbone), state.backbone.default_guidance_scale, step=0.5,
                                         label="Guidance (classifier-free; 1 = none)", visible=state.backbone.conditioning != "none")
                gr.Markdown("**What to clamp**: an SAE (block, timestep; spatial has one code per location, pooled "
                            "one per image) and its features.")
                cell = cell_inputs(state, default=steer_cell)
                with gr.Row():
                    target = gr.Dropdown(classes, value=target_class, label="Target class (for suggestions and class maps)")
                    count = gr.Slider(*COUNT_SLIDER, defaults.count, step=1, label="How many")
                suggest = gr.Button("Suggest features", size="sm")
                features = gr.Dropdown(state.feature_choices(steer_cell), value=suggested, multiselect=True, filterable=True,
                                       label="Features to clamp (type to search by label or id)")
                clamp_to = gr.Radio(clamp_modes(steer_cell.pooling), value="class-map" if spatial else "value",
                                    label="Clamp each feature to")
                strength = gr.Slider(*STRENGTH, defaults.strength, step=0.25, label="Value")
                with gr.Row():
                    t_high = gr.Slider(0, last, defaults.window[0], step=1, label=f"Steer from t ({last} = pure noise)")
                    t_low = gr.Slider(0, last, defaults.window[1], step=1, label="down to t (0 = clean)")
            with gr.Column(scale=2):
                with gr.Row():
                    baseline = gr.Image(label="Baseline (same seed, nothing clamped)", height=side + 48, buttons=["download"],
                                        interactive=False, elem_classes=["revelio-result"])
                    steered = gr.Image(label="Steered", height=side + 48, buttons=["download"], interactive=False,
                                       elem_classes=["revelio-result"])
                with gr.Row():
                    baseline_label = gr.Label(label="Probe on the baseline")
                    steered_label = gr.Label(label="Probe on the steered image")
                gr.Markdown(PROBE_HELP.format(hook=best.hook, t=best.timestep, kind=best.probe) + " "
                            + PROBE_KINDS, elem_classes=["revelio-help"])
                note = gr.Markdown()
                mask_help = gr.Markdown(MASK_HELP, visible=spatial)
                mask = gr.ImageEditor(label="Mask: paint where to clamp", type="pil", sources=[], transforms=[],
                                      layers=False, canvas_size=(side, side), fixed_canvas=True, height=side + 120,
                                      brush=gr.Brush(colors=["#ff2d2d"], color_mode="fixed", default_size=max(2, side // 12)),
                                      eraser=gr.Eraser(default_size=max(2, side // 12)), visible=spatial,
                                      elem_classes=["revelio-mask"])
                self.mask_editor = mask
        wire(suggest.click, self.suggest, [*cell, target, count], features, api_name="suggest_features",
             show_progress_on=[features])
        follow_cell(state, features, cell)
        cell[2].change(self.cell_changed, [cell[2], clamp_to], [clamp_to, mask, mask_help], api_visibility="private",
                       queue=False)
        event = wire(generate.click, self.steer,
                     [condition, seed, steps, guidance, *cell, features, clamp_to, target, strength, t_high, t_low,
                      negative_prompt, mask],
                     [baseline, steered, baseline_label, steered_label, note], api_name="steer",
                     show_progress_on=[status])
        wire(event.success, self.paint_on, [baseline, mask], mask, api_visibility="private", show_progress="hidden")


def _decode(data: bytes) -> Image.Image:
    import io

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception:  # noqa: BLE001 - any undecodable layer is the same user error
        raise ImageError("the painted mask could not be read; paint it again") from None
    return image


def _resize(mask: torch.Tensor, side: int) -> torch.Tensor:
    if mask.shape == (side, side):
        return mask
    return torch.nn.functional.interpolate(mask[None, None], size=(side, side), mode="bilinear", align_corners=False)[0, 0]
