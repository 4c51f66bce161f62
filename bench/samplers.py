"""Which sampler gives the bundled model its best samples at the app's step count?

Every candidate scheduler (diffusers' own, built from the model's training schedule) generates
the same seeded samples per class at the same step count and guidance; the release's reference
classifier (trained only on real images) labels them, and the share labelled as the class they
were generated from is the score (the quality gate's measure, chance 0.10). The first row is the
shipped sampler: the baseline in the same run. Run:
``.venv/bin/python bench/samplers.py [--per-class 20] [--steps 25]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import revelio  # noqa: E402
from revelio.probes.reference_classifier import ReferenceClassifier  # noqa: E402

# name -> (scheduler class, overrides of the model's scheduler config)
CANDIDATES = {
    "shipped": (None, {}),
    "dpm++ 2m trailing": (DPMSolverMultistepScheduler, {"timestep_spacing": "trailing", "steps_offset": 0}),
    "dpm++ 2m thresholded": (DPMSolverMultistepScheduler, {"thresholding": True, "sample_max_value": 1.0}),
    "dpm++ 2m sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": (UniPCMultistepScheduler, {}),
    "unipc thresholded": (UniPCMultistepScheduler, {"thresholding": True, "sample_max_value": 1.0}),
    "ddpm clipped": (DDPMScheduler, {"clip_sample": True}),
    "ddim clipped": (DDIMScheduler, {"clip_sample": True}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler ancestral": (EulerAncestralDiscreteScheduler, {}),
}


def score(backbone: revelio.models.Backbone, judge: ReferenceClassifier, per_class: int, steps: int, guidance: float) -> list[float]:
    """Per-class share of samples the judge labels as their class (the quality gate's seeds)."""
    shares = []
    for c in range(len(backbone.class_names)):
        images = backbone.generate(c, seed=1000 * c, num_images=per_class, num_inference_steps=steps,
                                   guidance_scale=guidance, output_type="pt")
        shares.append(float((judge.predict(images * 2 - 1) == c).float().mean()))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="bundled")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, nargs="+", default=None, help="default: the model's own")
    parser.add_argument("--only", nargs="+", default=None, help="candidate names to try (default: all)")
    args = parser.parse_args()
    release = revelio.load_release(args.release)
    backbone, judge = release.backbone(device="cpu"), release.reference_classifier()
    shipped = backbone.pipeline.scheduler
    guidances = args.guidance or [backbone.default_guidance_scale]
    print(f"{args.per_class} samples per class, {args.steps} steps; judge: reference classifier "
          f"({judge.config.test_accuracy:.3f} on real test images); shipped: "
          f"{type(shipped).__name__} {dict((k, shipped.config[k]) for k in ('timestep_spacing', 'prediction_type'))}")
    print(f"{'sampler':24} {'guidance':>8} {'accuracy':>9} {'worst class':>12} {'vs shipped':>10} {'seconds':>8}")
    baseline = None
    for name, (kind, overrides) in CANDIDATES.items():
        if args.only and name not in args.only and name != "shipped":
            continue
        backbone.pipeline.scheduler = (kind or type(shipped)).from_config(shipped.config, **overrides)
        for guidance in guidances:
            started = time.perf_counter()
            try:
                shares = score(backbone, judge, args.per_class, args.steps, guidance)
            except (IndexError, ValueError) as err:  # a scheduler that cannot run this schedule
                print(f"{name:24} {guidance:8.2f}   failed: {type(err).__name__}: {err}")
                continue
            accuracy = sum(shares) / len(shares)
            baseline = accuracy if baseline is None else baseline
            print(f"{name:24} {guidance:8.2f} {accuracy:9.3f} {min(shares):12.3f} {accuracy / baseline:9.2f}x "
                  f"{time.perf_counter() - started:8.1f}", flush=True)
    backbone.pipeline.scheduler = shipped


if __name__ == "__main__":
    main()
