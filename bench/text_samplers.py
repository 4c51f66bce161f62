"""How well does the small text model draw every (colour, class) prompt, at which sampler settings?

For each setting (steps:guidance, with the pipeline's own scheduler) every prompt "a {colour}
{class}" of colour Fashion-MNIST generates ``--per-prompt`` samples with fixed seeds (prompt p,
class-major, image i: seed 1000 p + i). Class is judged by a reference classifier trained on real
grey Fashion-MNIST padded to 32 px (exactly the channel maximum of the colour data, which is how
samples are turned grey); colour by the nearest palette hue of the saturated pixels
(revelio.probes.colour_judge). Chance is 0.10 for class and 0.17 for colour. Run:
``.venv/bin/python bench/text_samplers.py MODEL --classifier DIR [--settings 25:4 25:7.5 50:4]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import revelio  # noqa: E402
from revelio.data.colour_fashion import CLASS_WORDS, COLOURS, PALETTE, caption  # noqa: E402
from revelio.data.datasets import load_image_dataset  # noqa: E402
from revelio.plots import sample_grid  # noqa: E402
from revelio.probes.colour_judge import grey, judge_colours  # noqa: E402
from revelio.probes.reference_classifier import ReferenceClassifier  # noqa: E402


def grey_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Real Fashion-MNIST, grey, padded to 32 px, in [-1, 1], with its class labels."""
    data = load_image_dataset("colour-fashion-mnist", split).dataset
    rgb = torch.from_numpy(np.stack([np.asarray(image) for image in data["image"]])).permute(0, 3, 1, 2).float() / 255
    return grey(rgb), torch.tensor(data["class"])


def reference_classifier(folder: Path, epochs: int, width: int) -> tuple[ReferenceClassifier, float]:
    """Load the classifier, or fit it on the real training images and save it; with its real test accuracy."""
    if (folder / "config.json").is_file():
        classifier = ReferenceClassifier.from_pretrained(folder)
    else:
        images, labels = grey_split("train")
        classifier = ReferenceClassifier.fit(images, labels, CLASS_WORDS, epochs=epochs, width=width,
                                             dataset="fashion-mnist (grey, padded to 32 px)", trained_on="real training images")
        classifier.save_pretrained(folder)
    return classifier, classifier.accuracy(*grey_split("test"))


def judge(backbone: revelio.models.Backbone, classifier: ReferenceClassifier, per_prompt: int, steps: int,
          guidance: float) -> tuple[dict[str, float], np.ndarray]:
    """Class and colour accuracy over all prompts, and the first sample of each ([classes, colours, 3, H, W])."""
    palette = list(PALETTE.values())
    class_hits, colour_hits, firsts = [], [], []
    for k, word in enumerate(CLASS_WORDS):
        row = []
        for c, colour in enumerate(COLOURS):
            images = backbone.generate(caption(colour, word), seed=1000 * (k * len(COLOURS) + c), num_images=per_prompt,
                                       num_inference_steps=steps, guidance_scale=guidance, output_type="pt")
            class_hits.append(classifier.predict(grey(images)) == k)
            colour_hits.append(judge_colours(images, palette) == c)
            row.append(images[0].numpy())
        firsts.append(row)
    scores = {"class_accuracy": float(torch.cat(class_hits).float().mean()),
              "colour_accuracy": float(torch.cat(colour_hits).float().mean()),
              "both": float((torch.cat(class_hits) & torch.cat(colour_hits)).float().mean())}
    return scores, np.array(firsts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--classifier", type=Path, required=True, help="reference classifier folder; fitted there when missing")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--per-prompt", type=int, default=10)
    parser.add_argument("--settings", nargs="+", default=["25:4", "25:7.5", "50:4"], help="steps:guidance")
    parser.add_argument("--out", type=Path, help="JSON of the table; a samples-<setting>.png grid beside it")
    args = parser.parse_args()
    torch.manual_seed(0)
    classifier, real_accuracy = reference_classifier(args.classifier, args.epochs, args.width)
    print(f"reference classifier: {real_accuracy:.4f} on real grey test images")
    if args.model == "-":
        return
    backbone = revelio.load_backbone(args.model, device="cpu")
    rows = []
    print("| steps | guidance | class accuracy | colour accuracy | both | seconds |\n|---|---|---|---|---|---|")
    for setting in args.settings:
        steps, guidance = int(setting.split(":")[0]), float(setting.split(":")[1])
        started = time.time()
        scores, firsts = judge(backbone, classifier, args.per_prompt, steps, guidance)
        rows.append({"steps": steps, "guidance": guidance, **scores, "seconds": round(time.time() - started, 1)})
        print(f"| {steps} | {guidance} | {scores['class_accuracy']:.3f} | {scores['colour_accuracy']:.3f} | {scores['both']:.3f} | {rows[-1]['seconds']} |")
        if args.out:
            sample_grid(firsts, CLASS_WORDS, len(COLOURS), args.out.parent / f"samples-{steps}-{guidance}.png")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "per_prompt": args.per_prompt,
                                        "reference_accuracy_on_real_test": real_accuracy, "settings": rows}, indent=2))


if __name__ == "__main__":
    main()
