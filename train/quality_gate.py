"""Quality gate for a class-conditional model: does an independent classifier recognise its samples?

Trains a small CNN on the dataset's REAL training images (or loads the one already at
--classifier), reports its accuracy on the real test images, then generates --per-class samples
of every class with fixed seeds (class c, image i uses seed --seed + 1000 c + i) and reports how
often the classifier labels them as the class they were generated from (chance is 1/classes).

  python train/quality_gate.py --model releases/fashion-mnist/model --out releases/fashion-mnist

Writes <out>/reference_classifier/, <out>/metrics/quality_gate.json and <out>/plots/samples.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="class-conditional diffusers pipeline (folder or Hub id)")
    parser.add_argument("--dataset", default="fashion-mnist", help="the dataset the model was trained on")
    parser.add_argument("--image-column")
    parser.add_argument("--label-column")
    parser.add_argument("--classifier", type=Path, help="reference classifier folder (default: <out>/reference_classifier); trained when missing")
    parser.add_argument("--epochs", type=int, default=3, help="reference classifier epochs")
    parser.add_argument("--per-class", type=int, default=100, help="samples generated per class")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps per sample (25 suits DPM-Solver++)")
    parser.add_argument("--guidance-scale", type=float, help="default: the model's own")
    parser.add_argument("--grid-columns", type=int, default=10, help="samples per class in plots/samples.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device")
    parser.add_argument("--out", required=True, type=Path)
    return parser.parse_args(argv)


def real_images(dataset: str, split: str, resolution: int, channels: int, image_column: str | None, label_column: str | None):
    """(images in [-1, 1], labels, class names) of one split of the dataset."""
    from revelio.data.datasets import load_image_dataset
    from revelio.data.images import load_image, to_pixels

    data = load_image_dataset(dataset, split, image_column, label_column)
    if data.class_names is None:
        raise SystemExit(f"{dataset} has no class labels; the quality gate needs them (--label-column)")
    images = to_pixels([load_image(x) for x in data.dataset[data.image_column]], resolution, channels)
    return images, torch.tensor(data.labels), data.class_names


def reference_classifier(args: argparse.Namespace, resolution: int, channels: int):
    """Load the reference classifier, or train it on real images and save it; returns (classifier, test accuracy)."""
    from revelio.probes.reference_classifier import ReferenceClassifier

    folder = args.classifier or args.out / "reference_classifier"
    test_x, test_y, names = real_images(args.dataset, "test", resolution, channels, args.image_column, args.label_column)
    if (folder / "config.json").is_file():
        classifier = ReferenceClassifier.from_pretrained(folder)
        return classifier, classifier.accuracy(test_x, test_y)
    train_x, train_y, _ = real_images(args.dataset, "train", resolution, channels, args.image_column, args.label_column)
    classifier = ReferenceClassifier.fit(train_x, train_y, names, epochs=args.epochs, seed=args.seed,
                                         dataset=args.dataset, trained_on="real training images")
    classifier.metadata["test_accuracy"] = classifier.accuracy(test_x, test_y)
    classifier.save_pretrained(folder)
    return classifier, classifier.metadata["test_accuracy"]


def sample_grid(samples: torch.Tensor, class_names: list[str], columns: int, path: Path) -> None:
    """One row of samples per class, labelled, as a PNG."""
    from matplotlib.figure import Figure

    rows = len(class_names)
    figure = Figure(figsize=(columns * 0.6 + 1.4, rows * 0.6))
    axes = figure.subplots(rows, columns, squeeze=False)
    for c, name in enumerate(class_names):
        for i in range(columns):
            ax = axes[c][i]
            image = samples[c, i].permute(1, 2, 0).squeeze(-1).numpy()
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[c][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    figure.subplots_adjust(left=0.16, right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import revelio
    from revelio.storage.files import write_json

    backbone = revelio.load_backbone(args.model, device=args.device)
    names = backbone.class_names
    if not names:
        raise SystemExit(f"{args.model} is not class-conditional; the quality gate generates per class")
    classifier, real_accuracy = reference_classifier(args, backbone.resolution, backbone.image_channels)
    if classifier.class_names != names:
        raise SystemExit(f"the classifier's classes {classifier.class_names} differ from the model's {names}")
    columns = min(args.grid_columns, args.per_class)
    per_class, samples = {}, []
    for c, name in enumerate(names):
        images = backbone.generate(c, seed=args.seed + 1000 * c, num_images=args.per_class,
                                   num_inference_steps=args.steps, guidance_scale=args.guidance_scale, output_type="pt")
        predicted = classifier.predict(images * 2 - 1)
        per_class[name] = float((predicted == c).float().mean())
        samples.append(images[:columns])
        print(json.dumps({"class": name, "accuracy": per_class[name]}), flush=True)
    result = {
        "model": str(args.model), "dataset": args.dataset, "samples_per_class": args.per_class,
        "num_inference_steps": args.steps, "guidance_scale": args.guidance_scale or backbone.default_guidance_scale,
        "seed": args.seed, "chance": 1 / len(names),
        "reference_accuracy_on_real_test": real_accuracy,
        "reference_accuracy_on_samples": sum(per_class.values()) / len(per_class),
        "per_class_accuracy_on_samples": per_class,
    }
    write_json(result, args.out / "metrics" / "quality_gate.json")
    sample_grid(torch.stack(samples), names, columns, args.out / "plots" / "samples.png")
    print(f"reference classifier: {real_accuracy:.4f} on real test images, "
          f"{result['reference_accuracy_on_samples']:.4f} on generated samples (chance {result['chance']:.2f})")
    return result


if __name__ == "__main__":
    main()
