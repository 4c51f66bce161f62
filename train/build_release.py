"""Build a complete release from a trained class-conditional diffusion model, with one command.

  python train/build_release.py --model artifacts/default-model/pipeline --out releases/fashion-mnist \
      --hooks down_blocks.1 down_blocks.2 mid_block up_blocks.0 up_blocks.1 --timesteps 25 100 300 600

Runs the other train/ scripts (each command is printed and recorded in release.json): the quality
gate (reference classifier + samples), activation caches of training, test and random-weights
images, the SAE grid for both poolings, and the probe grid with baselines. Then, here: SAE
metrics on the held-out test images, each feature's mean activation at every timestep, exemplar
thumbnails, the SAE metric pictures, release.json and the model card from hub_cards/release.md.
Caches and SAE checkpoints live in --work and are reused when the command is run again.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

TRAIN = Path(__file__).resolve().parent
CARD_TEMPLATE = TRAIN.parent / "hub_cards" / "release.md"
RELEASE_FILES = ("config.json", "model.safetensors", "stats.safetensors")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="class-conditional diffusers pipeline folder")
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, a Hub dataset id, or an image folder")
    parser.add_argument("--image-column")
    parser.add_argument("--label-column")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--hooks", nargs="+", help="default: every block-level hook point")
    parser.add_argument("--timesteps", nargs="+", type=int, default=[25, 100, 300, 600])
    parser.add_argument("--train-images", type=int, default=12000)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--held-out-per-class", type=int, default=20, help="test images per class kept for the app (examples, histograms)")
    parser.add_argument("--random-images", type=int, default=4000, help="training images for the random-weights baseline")
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--mean-tokens", type=int, default=1_000_000, help="training tokens per mean-pooled SAE")
    parser.add_argument("--spatial-tokens", type=int, default=2_000_000, help="training tokens per spatial SAE")
    parser.add_argument("--sae-batch-size", type=int, default=1024)
    parser.add_argument("--probe-max-train", type=int, default=6000)
    parser.add_argument("--probe-epochs", type=int, default=5, help="Diff-C epochs")
    parser.add_argument("--per-class", type=int, default=100, help="quality-gate samples per class")
    parser.add_argument("--classifier-epochs", type=int, default=3)
    parser.add_argument("--repo-id", default="bundled", help="the Hub repo id shown in the card's loading example")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--work", type=Path, default=Path("artifacts/release-work"), help="caches and SAE checkpoints")
    parser.add_argument("--out", required=True, type=Path)
    return parser.parse_args(argv)


class Steps:
    """Runs train/ scripts as subprocesses (fresh memory each) and remembers their command lines."""

    def __init__(self, device: str | None) -> None:
        self.device = device
        self.commands: list[str] = []

    def run(self, script: str, *args: Any, device: bool = True, done: bool = False) -> None:
        """Run a script, or with ``done`` (its output is already there) only record its command."""
        argv = [str(TRAIN / script), *map(str, args)] + (["--device", self.device] if device and self.device else [])
        shown = "python " + shlex.join([f"train/{script}", *argv[1:]])
        self.commands.append(shown)
        print(f"\n$ {shown}" + ("\n(finished earlier: reusing its output)" if done else ""), flush=True)
        if not done:
            subprocess.run([sys.executable, *argv], check=True)


def column_flags(args: argparse.Namespace) -> list[str]:
    """--image-column / --label-column as passed to the other train/ scripts (only those given)."""
    return [x for flag, value in (("--image-column", args.image_column), ("--label-column", args.label_column)) if value for x in (flag, value)]


def extract(steps: Steps, args: argparse.Namespace, name: str, split: str, limit: int, hooks: list[str], random: bool = False) -> Path:
    """One activation cache under --work, reused when its dataset.json shows it finished."""
    root = args.work / "caches" / name
    columns = column_flags(args)
    steps.run(
        "extract_activations.py", "--backbone", args.out / "model", "--dataset", args.dataset, "--split", split,
        "--limit", limit, "--hooks", *hooks, "--timesteps", *args.timesteps, "--seed", args.seed, "--out", root,
        "--overwrite", *columns, *(["--random-weights"] if random else []), done=(root / "dataset.json").is_file(),
    )
    return root


def probes_done(out: Path, hooks: list[str], timesteps: list[int]) -> bool:
    """A finished probe grid for exactly these cells is already in the release."""
    grid = out / "metrics" / "probe_grid.json"
    if not grid.is_file():
        return False
    summary = json.loads(grid.read_text())
    return summary["hooks"] == hooks and summary["timesteps"] == timesteps


def evaluate_saes(args: argparse.Namespace, hooks: list[str], test_cache: Path) -> list[dict]:
    """Copy each SAE into the release with its held-out metrics and per-timestep mean activations."""
    from revelio.analysis.statistics import activation_by_timestep
    from revelio.cache import ActivationCache, cell_path
    from revelio.sae.metrics import SAEEvaluator
    from revelio.sae.model import TIMESTEPS_FILE, KSparseAutoencoder

    rows = []
    for hook in hooks:
        for pooling in ("mean", "none"):
            caches = {t: ActivationCache(cell_path(test_cache, hook, t, pooling)) for t in args.timesteps}
            for t in args.timesteps:
                sae = KSparseAutoencoder.from_pretrained(args.work / "saes" / hook / f"t{t}" / pooling)
                evaluator = SAEEvaluator(sae)
                for chunk in caches[t].chunks(rows=65536, columns=("activations",)):
                    evaluator.add(chunk["activations"].float())
                held_out = evaluator.result()
                sae.metadata["metrics"] = {**sae.metadata.get("metrics", {}), "test": held_out}
                by_t = activation_by_timestep(sae, caches)
                sae.extra_files[TIMESTEPS_FILE] = ({"timesteps": torch.tensor(sorted(caches)), "mean_activation": by_t}, {})
                sae.save_pretrained(args.out / "saes" / hook / f"t{t}" / pooling)
                rows.append({"hook": hook, "timestep": t, "pooling": pooling, "d_in": sae.d_in, "d_sae": sae.d_sae, "k": sae.k,
                             **{k: v for k, v in held_out.items() if k != "tokens"}, "test_tokens": held_out["tokens"]})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def write_sae_metrics(rows: list[dict], hooks: list[str], timesteps: list[int], out: Path) -> None:
    from revelio.plots import grid_heatmap
    from revelio.storage.files import write_json

    write_json({"split": "test", "hooks": hooks, "timesteps": timesteps, "rows": rows}, out / "metrics" / "sae_grid.json")
    for pooling in ("mean", "none"):
        cells = [r for r in rows if r["pooling"] == pooling]
        for metric, best in (("normalized_mse", "min"), ("dead_fraction", "min")):
            grid_heatmap({(r["hook"], r["timestep"]): r[metric] for r in cells}, hooks, timesteps,
                         f"SAE {metric} on test images (pooling {pooling})", out / "plots" / f"sae_{metric}_{pooling}.png",
                         colorbar_label=metric, best=best)


def write_exemplars(out: Path, dataset: str, image_column: str | None, label_column: str | None) -> int:
    """Every training image that is a top exemplar of some feature, as uint8 thumbnails by dataset index."""
    import numpy as np

    from revelio.data.datasets import load_image_dataset
    from revelio.data.images import load_image
    from revelio.storage.files import read_safetensors, write_safetensors

    used: set[int] = set()
    for stats in sorted((out / "saes").glob("*/t*/*/stats.safetensors")):
        used.update(int(i) for i in read_safetensors(stats)["top_images"].flatten().tolist() if i >= 0)
    index = sorted(used)
    data = load_image_dataset(dataset, "train", image_column, label_column, limit=index[-1] + 1 if index else 0)
    images = [np.asarray(load_image(data.dataset[i][data.image_column])) for i in index]
    arrays = torch.from_numpy(np.stack([a[..., None] if a.ndim == 2 else a for a in images]))
    write_safetensors({"images": arrays, "dataset_index": torch.tensor(index, dtype=torch.long)}, out / "exemplars" / "thumbnails.safetensors")
    return len(index)


def write_held_out_examples(out: Path, dataset: str, split: str, image_column: str | None, label_column: str | None,
                            per_class: int) -> int:
    """The first ``per_class`` test images of every class, for the app's examples and activation histograms."""
    import numpy as np

    from revelio.data.datasets import load_image_dataset
    from revelio.data.images import load_image
    from revelio.storage.files import write_safetensors

    data = load_image_dataset(dataset, split, image_column, label_column)
    labels = data.labels or [0] * len(data.dataset)  # unlabelled data: the first images, one group
    chosen: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        if len(chosen.setdefault(label, [])) < per_class:
            chosen[label].append(index)
    index = sorted(i for rows in chosen.values() for i in rows)
    images = [np.asarray(load_image(data.dataset[i][data.image_column])) for i in index]
    write_safetensors({
        "images": torch.from_numpy(np.stack([a[..., None] if a.ndim == 2 else a for a in images])),
        "labels": torch.tensor([labels[i] for i in index], dtype=torch.long),
        "dataset_index": torch.tensor(index, dtype=torch.long),
    }, out / "exemplars" / "held_out.safetensors")
    return len(index)


def markdown_table(values: dict[tuple[str, int], str], hooks: list[str], timesteps: list[int]) -> str:
    lines = ["| block | " + " | ".join(f"t={t}" for t in timesteps) + " |", "|---|" + "---|" * len(timesteps)]
    lines += [f"| {h} | " + " | ".join(values.get((h, t), "") for t in timesteps) + " |" for h in hooks]
    return "\n".join(lines)


def render_card(info: dict, probe_grid: dict, sae_rows: list[dict], quality: dict | None, repo_id: str, out: Path) -> None:
    """README.md from hub_cards/release.md: YAML metadata plus the grid tables."""
    from huggingface_hub import ModelCard, ModelCardData

    from revelio.data.datasets import FASHION_MNIST, FASHION_MNIST_HUB

    hooks, timesteps, best = info["hooks"], info["timesteps"], info["best_cell"]
    kind_rows = [r for r in probe_grid["rows"] if r["features"] == "diffusion" and r["probe"] == best["probe"]]
    probe_table = markdown_table({(r["hook"], r["timestep"]): f"{r['test_accuracy']:.3f}" for r in kind_rows}, hooks, timesteps)
    sae_table = markdown_table(
        {(r["hook"], r["timestep"]): f"{r['normalized_mse']:.3f} / {100 * r['dead_fraction']:.1f}%" for r in sae_rows if r["pooling"] == "mean"},
        hooks, timesteps,
    )
    pixels = next((r["test_accuracy"] for r in probe_grid["rows"] if r["features"] == "pixels"), None)
    data = ModelCardData(
        library_name="revelio", license="apache-2.0", tags=["sparse-autoencoder", "interpretability", "diffusion", "probing", "revelio"],
        base_model=None if info["backbone"] == "model" else info["backbone"],
        datasets=[FASHION_MNIST_HUB] if info["dataset"] == FASHION_MNIST else None if Path(info["dataset"]).exists() else [info["dataset"]],
        metrics=["accuracy", "normalized_mse"],
    )
    card = ModelCard.from_template(
        data, template_path=str(CARD_TEMPLATE), title=f"revelio release: {info['dataset']}",
        backbone_name=info["backbone_name"], dataset=info["dataset"], num_train_images=info["num_train_images"],
        hooks=hooks, timesteps=timesteps, poolings=info["poolings"], sae=info["sae"], probe_kinds=info["probe_kinds"],
        best=best, chance=probe_grid["chance"], quality=quality, repo_id=repo_id, probe_table_kind=best["probe"],
        artifact_source=out.as_posix() if repo_id == "bundled" else repo_id,
        probe_table=probe_table, sae_table=sae_table, pixel_baseline="n/a" if pixels is None else f"{pixels:.3f}",
        has_model=(out / "model" / "model_index.json").is_file(), commands=info["commands"],
    )
    card.save(out / "README.md")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import diffusers

    import revelio
    from revelio.storage.files import write_json

    steps = Steps(args.device)
    if args.model.resolve() != (args.out / "model").resolve():
        shutil.rmtree(args.out / "model", ignore_errors=True)
        shutil.copytree(args.model, args.out / "model")
    backbone = revelio.load_backbone(args.out / "model", device="cpu")
    hooks = args.hooks or backbone.hook_points
    missing = [h for h in hooks if h not in backbone.hook_points]
    if missing:
        raise SystemExit(f"{args.model} has no hook points {missing}; it has {backbone.hook_points}")
    columns = column_flags(args)

    steps.run("quality_gate.py", "--model", args.out / "model", "--dataset", args.dataset, "--per-class", args.per_class,
              "--epochs", args.classifier_epochs, "--seed", args.seed, "--out", args.out, *columns)
    train = extract(steps, args, "train", "train", args.train_images, hooks)
    test = extract(steps, args, "test", args.test_split, args.test_images, hooks)
    random_train = extract(steps, args, "random-train", "train", args.random_images, hooks, random=True)
    random_test = extract(steps, args, "random-test", args.test_split, args.test_images, hooks, random=True)
    for pooling, tokens in (("mean", args.mean_tokens), ("none", args.spatial_tokens)):
        steps.run("train_sae.py", "--cache", train, "--out", args.work / "saes", "--poolings", pooling, "--expansion", args.expansion,
                  "--k", args.k, "--tokens", tokens, "--batch-size", args.sae_batch_size, "--seed", args.seed, device=False)
    reuse_probes = probes_done(args.out, hooks, args.timesteps)  # delete metrics/probe_grid.json to retrain
    if not reuse_probes:
        shutil.rmtree(args.out / "probes", ignore_errors=True)
    steps.run("train_probes.py", "--cache", train, "--test-cache", test, "--random-cache", random_train, "--random-test-cache", random_test,
              "--saes", args.work / "saes", "--max-train", args.probe_max_train, "--epochs", args.probe_epochs,
              "--seed", args.seed, "--out", args.out, device=False, done=reuse_probes)

    shutil.rmtree(args.out / "saes", ignore_errors=True)
    sae_rows = evaluate_saes(args, hooks, test)
    write_sae_metrics(sae_rows, hooks, args.timesteps, args.out)
    exemplars = write_exemplars(args.out, args.dataset, args.image_column, args.label_column)
    held_out = write_held_out_examples(args.out, args.dataset, args.test_split, args.image_column, args.label_column,
                                       args.held_out_per_class)
    probe_grid = json.loads((args.out / "metrics" / "probe_grid.json").read_text())
    quality_file = args.out / "metrics" / "quality_gate.json"
    quality = json.loads(quality_file.read_text()) if quality_file.is_file() else None
    best = probe_grid["best"]
    info = {
        "backbone": "model", "backbone_name": f"revelio's {args.dataset} model" if args.dataset == "fashion-mnist" else str(args.model),
        "dataset": args.dataset, "num_train_images": args.train_images, "num_test_images": args.test_images,
        "hooks": hooks, "timesteps": args.timesteps, "poolings": ["mean", "none"], "class_names": backbone.class_names,
        "probe_kinds": sorted({r["probe"] for r in probe_grid["rows"] if r["features"] == "diffusion"}),
        "best_cell": {k: best[k] for k in ("hook", "timestep", "probe", "test_accuracy")},
        "sae": {"expansion": args.expansion, "k": args.k, "mean_tokens": args.mean_tokens, "spatial_tokens": args.spatial_tokens},
        "exemplar_images": exemplars, "held_out_images": held_out, "seed": args.seed,
        "versions": {"revelio": revelio.__version__, "torch": torch.__version__, "diffusers": diffusers.__version__},
        "commands": ["python " + shlex.join(["train/build_release.py", *(argv if argv is not None else sys.argv[1:])]), *steps.commands],
    }
    write_json(info, args.out / "release.json")
    render_card(info, probe_grid, sae_rows, quality, args.repo_id, args.out)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"release written to {args.out}: {size / 2**20:.1f} MiB; best cell {best['hook']} t={best['timestep']} "
          f"({best['probe']}, test accuracy {best['test_accuracy']:.4f})")


if __name__ == "__main__":
    main()
