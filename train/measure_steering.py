"""Measure what SAE steering does on a class-conditional release: success rate and side effect.

For each target class c, the features most selective for c are clamped at every chosen SAE while
generating images of every OTHER class, with the same seeds as an unsteered baseline. The
release's reference classifier (trained on real images only) then says how many images it labels
c: the success rate, against the unsteered baseline's rate. Two ways to clamp:

- ``--clamp-to class-map`` (spatial SAEs, the default): the features with the most extra
  activation on c's images (summed over locations) are clamped to --strength x their mean
  activation map on c's images, measured on the release's held-out test images;
- ``--clamp-to max``: the features carrying most activation on c among those mostly active on it
  (label purity) are clamped to --strength x their largest training activation, everywhere.

Side effect: the same number of features unrelated to any class (the lowest label purity),
clamped the same way (to --strength x their mean map over all images, or x their max), shows how
far images move in pixel space (mean absolute change in [0, 1] units) and how often their
predicted class changes, next to the same numbers for class steering.

  python train/measure_steering.py --release bundled --cells mid_block:100 up_blocks.0:100 up_blocks.1:100
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", default="bundled", help="bundled, a release folder, or a Hub repo id")
    parser.add_argument("--cells", nargs="+", metavar="HOOK:T", default=["mid_block:100", "up_blocks.0:100", "up_blocks.1:100"],
                        help="SAEs to steer with, all at once")
    parser.add_argument("--pooling", default="none", choices=["mean", "none"])
    parser.add_argument("--clamp-to", default="class-map", choices=["class-map", "max"])
    parser.add_argument("--features-per-class", type=int, default=16, help="per SAE")
    parser.add_argument("--min-frequency", type=float, default=0.005, help="features rarer than this are not chosen (label-purity selection and unrelated features)")
    parser.add_argument("--strength", type=float, default=2.0, help="multiplies the class map (or the max activation)")
    parser.add_argument("--window", type=int, nargs=2, default=[999, 0], metavar=("T_HIGH", "T_LOW"))
    parser.add_argument("--per-source", type=int, default=5, help="images per source class")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance-scale", type=float, help="default: the model's own")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="where to write steering.json (default: print only)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import revelio
    from revelio.steering import FeatureEdit, steer
    from revelio.steering.selection import (
        ClassCodeMaps,
        class_selective_features,
        unrelated_features,
    )

    release = revelio.load_release(args.release)
    backbone = release.backbone()
    classifier = release.reference_classifier()
    cells = [(hook, int(t)) for hook, t in (c.rsplit(":", 1) for c in args.cells)]
    if args.clamp_to == "class-map" and args.pooling != "none":
        raise SystemExit("--clamp-to class-map needs spatial SAEs (--pooling none); use --clamp-to max for pooled ones")
    saes = [release.sae(hook, t, args.pooling) for hook, t in cells]
    stats_of = {id(sae): sae.feature_stats for sae in saes}
    if any(stats is None or stats.label_distribution.shape[1] == 0 for stats in stats_of.values()):
        raise SystemExit("these SAEs have no labelled feature statistics; rebuild the release with labels")
    names = release.class_names
    maps_of = {}
    if args.clamp_to == "class-map":
        images, labels = release.held_out_examples()
        for (hook, t), sae in zip(cells, saes):
            tokens = revelio.extract(backbone, images, [hook], [t], pooling="none", seed=release.info.get("seed", 0))[(hook, t)]
            maps_of[id(sae)] = ClassCodeMaps.from_tokens(sae, tokens, labels, len(names))
    window = tuple(args.window)
    generate = dict(num_inference_steps=args.steps, guidance_scale=args.guidance_scale, output_type="pt")

    def edits_for(target: int | None) -> list[FeatureEdit]:
        """One FeatureEdit per SAE: class ``target``'s selective features, or (None) unrelated ones."""
        edits = []
        for sae in saes:
            stats, maps = stats_of[id(sae)], maps_of.get(id(sae))
            n = args.features_per_class
            if target is None:
                chosen = unrelated_features(stats, n, args.min_frequency)
            else:
                chosen = maps.selective(target, n) if maps is not None else class_selective_features(stats, target, n, args.min_frequency)
            if maps is None:
                clamp = {f: args.strength * float(stats.max_activation[f]) for f in chosen}
            else:
                clamp = {f: args.strength * (maps.overall[..., f] if target is None else maps.map(target, f)) for f in chosen}
            if clamp:  # an SAE may have no feature that qualifies
                edits.append(FeatureEdit(sae, clamp=clamp, timesteps=window))
        return edits

    def images_of(source: int, edits: list[FeatureEdit] | None) -> torch.Tensor:
        seed = args.seed + 1000 * source
        if not edits:
            return backbone.generate(source, seed=seed, num_images=args.per_source, **generate)
        with steer(backbone, edits):
            return backbone.generate(source, seed=seed, num_images=args.per_source, **generate)

    baseline = {s: images_of(s, None) for s in range(len(names))}
    baseline_pred = {s: classifier.predict(x * 2 - 1) for s, x in baseline.items()}
    per_class, class_moves, class_flips = {}, [], []
    for target, name in enumerate(names):
        edits = edits_for(target)
        hits = base_hits = total = 0
        for source in range(len(names)):
            if source == target:
                continue
            steered = images_of(source, edits)
            predicted = classifier.predict(steered * 2 - 1)
            hits += int((predicted == target).sum())
            base_hits += int((baseline_pred[source] == target).sum())
            total += len(predicted)
            class_moves.append((steered - baseline[source]).abs().mean().item())
            class_flips.append(float((predicted != baseline_pred[source]).float().mean()))
        per_class[name] = {"features": [list(e.clamp) for e in edits],
                           "labels": [[stats_of[id(e.sae)].labels[f] for f in e.clamp] for e in edits],
                           "success": hits / total, "baseline": base_hits / total}
        print(json.dumps({"target": name, **per_class[name]}), flush=True)

    unrelated = edits_for(None)
    moves, flips = [], []
    for source in range(len(names)):
        steered = images_of(source, unrelated)
        moves.append((steered - baseline[source]).abs().mean().item())
        flips.append(float((classifier.predict(steered * 2 - 1) != baseline_pred[source]).float().mean()))
    result = {
        "release": str(args.release), "cells": [f"{h}:{t}" for h, t in cells], "pooling": args.pooling, "clamp_to": args.clamp_to,
        "features_per_class": args.features_per_class, "strength": args.strength, "window": list(window),
        "images_per_source_class": args.per_source, "num_inference_steps": args.steps, "seed": args.seed,
        "guidance_scale": args.guidance_scale or backbone.default_guidance_scale,
        "mean_success": sum(c["success"] for c in per_class.values()) / len(per_class),
        "mean_baseline": sum(c["baseline"] for c in per_class.values()) / len(per_class),
        "per_class": per_class,
        "side_effect": {
            "unrelated_features": [list(e.clamp) for e in unrelated],
            "unrelated_labels": [[stats_of[id(e.sae)].labels[f] for f in e.clamp] for e in unrelated],
            "unrelated_mean_abs_pixel_change": sum(moves) / len(moves),
            "unrelated_class_change_rate": sum(flips) / len(flips),
            "class_steering_mean_abs_pixel_change": sum(class_moves) / len(class_moves),
            "class_steering_class_change_rate": sum(class_flips) / len(class_flips),
        },
    }
    print(f"steering success {result['mean_success']:.3f} (unsteered baseline {result['mean_baseline']:.3f}); "
          f"unrelated features move pixels by {result['side_effect']['unrelated_mean_abs_pixel_change']:.4f} "
          f"and change the class of {result['side_effect']['unrelated_class_change_rate']:.3f} of images "
          f"(class steering: {result['side_effect']['class_steering_mean_abs_pixel_change']:.4f})")
    if args.out is not None:
        from revelio.storage.files import write_json

        write_json(result, args.out / "steering.json")
    return result


if __name__ == "__main__":
    main()
