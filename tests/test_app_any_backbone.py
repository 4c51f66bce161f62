"""The app's backbone-agnostic parts: ZeroGPU wrapping, Steer conditions per conditioning, display
sizes, the Space card and app.py's REVELIO_RELEASE (end-to-end releases of every backbone: elsewhere)."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import types
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from huggingface_hub import SpaceCard
from PIL import Image

from revelio.app.conditions import condition_inputs, generation_condition, guidance_range
from revelio.app.events import user_errors
from revelio.app.gpu import FORWARD_SECONDS, GENERATE_SECONDS, gpu
from revelio.app.rendering import display_side, to_display
from revelio.bundled import bundled_release_dir
from revelio.release import load_release
from revelio.release.load import Release
from revelio.release.space_card import render_space_card

ROOT = Path(__file__).resolve().parent.parent
STEER_ARGS = (0, 2, 2.5, "mid_block", 100, "none", [1, 2], "value", 1, 0, 999, 0)  # seed .. t_low


@pytest.fixture
def gpu_calls(monkeypatch) -> list[tuple[int, str]]:
    """A stand-in ``spaces`` package whose GPU decorator records (duration, function) per call."""
    calls: list[tuple[int, str]] = []

    def GPU(duration: int = 60):  # noqa: N802 - the real package's name
        def decorate(fn):
            def run(*args, **kwargs):
                calls.append((duration, fn.__name__))
                return fn(*args, **kwargs)
            return run
        return decorate

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    return calls


@pytest.fixture(scope="module")
def bundled_state():
    from revelio.app.state import AppState

    return AppState(load_release("bundled"))


def test_gpu_is_the_identity_without_spaces(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` raises ImportError
    assert gpu(10)(len) is len


def test_gpu_runs_under_spaces_gpu_when_present(gpu_calls):
    assert gpu(7)(len)("abc") == 3 and gpu_calls == [(7, "len")]


def test_the_apps_forwards_run_under_spaces_gpu(gpu_calls, bundled_state):
    from revelio.app.state import AppState
    from revelio.app.tabs.steer import SteerTab

    state = AppState(bundled_state.release)  # built with `spaces` present
    image = bundled_state.reference_images()[0][0]
    state.tokens([image], "mid_block", 100)
    state.probabilities([image])
    assert gpu_calls == [(FORWARD_SECONDS, "_extract_tokens"), (FORWARD_SECONDS, "_classify_images")]
    gpu_calls.clear()
    SteerTab(state).steer(8, *STEER_ARGS)
    assert gpu_calls.count((GENERATE_SECONDS, "_sample_image")) == 2  # the baseline and the steered image


def test_conditions_follow_each_backbones_conditioning(backbones):
    sd, dit, uncond = backbones["sd"], backbones["dit"], backbones["pixel-uncond"]
    assert generation_condition(sd, "a photo of a cat", "blurry") == ("a photo of a cat", "blurry")
    assert generation_condition(sd, None, "") == ("", None)  # the empty prompt, no negative prompt
    assert generation_condition(dit, "bag", None) == (dit.class_names.index("bag"), None)  # its own classes
    assert generation_condition(dit, 1, "") == (1, None)
    assert generation_condition(uncond, None, None) == (None, None) == generation_condition(uncond, "", "")
    for backbone, condition, negative, message in (
        (sd, 0, None, "prompt must be text"), (sd, "ok", ["x"], "negative prompt must be text"),
        (sd, "x" * 5000, None, "5000 characters"), (dit, "Trouser", None, "one of 'shirt'"), (dit, 7, None, "id in 0..2"),
        (dit, "bag", "blurry", "needs a text-conditioned model"), (uncond, 3, None, "unconditional"),
        (uncond, None, "blurry", "needs a text-conditioned model"),
    ):
        with pytest.raises(ValueError, match=message):
            generation_condition(backbone, condition, negative)


@pytest.mark.parametrize("kind, condition, negative", [("sd", "a photo of a cat", "blurry"), ("sdxl", "a red car", None),
                                                       ("dit", "sneaker", None), ("pixel-uncond", None, None)])
def test_the_steer_generator_draws_from_each_kind_of_condition(backbones, kind, condition, negative):
    from revelio.app.generation import GenerationService
    from revelio.app.steer_request import SteeringRequest

    backbone = backbones[kind]
    condition, negative = generation_condition(backbone, condition, negative)
    generator = GenerationService(SimpleNamespace(backbone=backbone, model_lock=threading.RLock()))
    request = SteeringRequest(condition, negative, seed=0, steps=2, guidance=backbone.default_guidance_scale, cell=None,
                              features=[], strength=0.0, window=(999, 0), clamp_to="value", target=0)
    image = generator.baseline(request)
    assert image.size == (backbone.resolution, backbone.resolution) and generator.baseline(request) is image  # cached


class RecordingBackbone:
    """The bundled model presented as a text or unconditional one: it records what the Steer handler
    passes to ``generate`` and draws with the bundled model (class 0), so its SAEs and probes apply."""

    def __init__(self, inner, conditioning: str) -> None:
        self.inner, self.conditioning, self.class_names, self.calls = inner, conditioning, None, []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def generate(self, condition=None, *, negative_prompt=None, **kwargs):
        self.calls.append((condition, negative_prompt))
        return self.inner.generate(0, **kwargs)


@pytest.mark.parametrize("conditioning, condition, negative, expected", [
    ("text", "a photo of a bag", "blurry", ("a photo of a bag", "blurry")),
    ("text", "", "", ("", None)),
    ("none", None, "", (None, None)),
])
def test_steer_passes_the_condition_to_both_generations(bundled_state, monkeypatch, conditioning, condition, negative, expected):
    from revelio.app.tabs.steer import SteerTab

    fake = RecordingBackbone(bundled_state.backbone, conditioning)
    monkeypatch.setattr(bundled_state, "backbone", fake)
    baseline, steered, before, after, note = SteerTab(bundled_state).steer(condition, *STEER_ARGS, negative)
    assert fake.calls == [expected, expected] and baseline.size == steered.size == (252, 252)  # 28 px x 9
    assert set(before) == set(bundled_state.class_names) and note.startswith("Clamped at")
    with pytest.raises(gr.Error, match="prompt must be text" if conditioning == "text" else "unconditional"):
        user_errors(SteerTab(bundled_state).steer)(3, *STEER_ARGS, "")


def test_steer_inputs_follow_the_conditioning(backbones):
    def state(kind: str, template: str | None = None, caption: str | None = None) -> SimpleNamespace:
        info = SimpleNamespace(prompt_template=template, caption_template=caption,
                               label_sets={"class": ["cat", "dog"], "colour": ["red", "blue"]})
        return SimpleNamespace(backbone=backbones[kind], release=SimpleNamespace(info=info), class_names=["cat", "dog"])

    prompt, negative = condition_inputs(state("sd", "a photo of a {}"))
    assert isinstance(prompt, gr.Textbox) and prompt.value == "a photo of a cat" and negative.visible
    captioned, _ = condition_inputs(state("sd", caption="a {colour} {class}"))  # the model's own captions, first of each set
    assert captioned.value == "a red cat"
    assert condition_inputs(state("sd", caption="a {size} {class}"))[0].value == "", "a field that is no label set: no example"
    assert condition_inputs(state("sd"))[0].value == "", "features extracted unconditionally: the empty prompt"
    classes, negative = condition_inputs(state("dit"))
    assert [c[0] for c in classes.choices] == backbones["dit"].class_names and not negative.visible  # its own classes
    nothing, negative = condition_inputs(state("pixel-uncond"))
    assert not nothing.visible and not negative.visible
    for default, high in ((2.5, 8.0), (4.0, 8.0), (7.5, 15.0), (12.0, 24.0)):  # the guidance slider holds each default
        low, top = guidance_range(SimpleNamespace(default_guidance_scale=default))
        assert low <= default <= top == high


def test_samples_are_shown_at_a_sensible_size():
    assert [display_side(r) for r in (28, 32, 256, 512, 1024)] == [256, 256, 256, 512, 512]
    assert to_display(Image.new("L", (28, 28)), 256).size == (252, 252)  # a whole factor: crisp pixels
    assert to_display(Image.new("RGB", (512, 512)), 512).size == (512, 512)
    assert to_display(Image.new("RGB", (1024, 768)), display_side(1024)).size == (512, 384)
    assert to_display(Image.new("RGB", (64, 64)), 112).size == (64, 64)  # no blurry 1.75x


def test_space_card_of_the_bundled_release():
    import gradio

    card = SpaceCard(render_space_card("someone/revelio-fashion-mnist", load_release("bundled")))
    assert card.data.sdk == "gradio" and card.data.sdk_version == gradio.__version__ and card.data.app_file == "app.py"
    assert card.data.models == ["someone/revelio-fashion-mnist"]  # its backbone ships in the release (model/)
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert "revelio's fashion-mnist model" in card.text and "{{" not in card.text and "runs on CPU" in card.text
    assert SpaceCard(render_space_card("bundled", load_release("bundled"))).data.models is None  # no Hub repo to name


def test_space_card_names_hub_backbone_and_dataset(tmp_path):
    info = json.loads((bundled_release_dir() / "release.json").read_text())
    info |= {"backbone": "stable-diffusion-v1-5/stable-diffusion-v1-5", "backbone_name": "Stable Diffusion 1.5",
             "conditioning": "text", "dataset": "timm/oxford-iiit-pet", "class_names": ["Abyssinian", "Bengal"]}
    (tmp_path / "release.json").write_text(json.dumps(info))
    card = SpaceCard(render_space_card("someone/pets-sd15", Release(tmp_path)))
    assert card.data.models == ["someone/pets-sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5"]
    assert card.data.datasets == ["timm/oxford-iiit-pet"]
    assert "**Stable Diffusion 1.5** (text-to-image)" in card.text and "write a prompt" in card.text
    assert "(2 classes)" in card.text and "ZeroGPU" in card.text and "Fashion" not in card.text
    info |= {"dataset": str(tmp_path)}  # an image folder: nothing to link
    (tmp_path / "release.json").write_text(json.dumps(info))
    assert SpaceCard(render_space_card("someone/pets-sd15", Release(tmp_path))).data.datasets is None


def test_app_py_serves_the_release_in_revelio_release(monkeypatch):
    spec = importlib.util.spec_from_file_location("revelio_app_entry", ROOT / "app.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    served = []
    monkeypatch.setattr(entry, "create_demo", lambda release, device: served.append((release, device)) or
                        SimpleNamespace(launch=lambda **kwargs: None))
    monkeypatch.setenv("REVELIO_RELEASE", "someone/pets-sd15")
    monkeypatch.setenv("REVELIO_DEVICE", "cuda")
    entry.main([])
    entry.main(["--release", "bundled", "--device", "cpu"])  # the flags win
    monkeypatch.delenv("REVELIO_RELEASE")
    monkeypatch.delenv("REVELIO_DEVICE")
    entry.main([])
    assert served == [("someone/pets-sd15", "cuda"), ("bundled", "cpu"), ("bundled", "cpu")]
