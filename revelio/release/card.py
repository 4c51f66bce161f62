"""The release's model card: README.md from hub_cards/release.md, with YAML metadata and grid tables."""

from __future__ import annotations

from pathlib import Path

from revelio.bundled import is_bundled
from revelio.data.datasets import COLOUR_FASHION_MNIST, FASHION_MNIST, FASHION_MNIST_HUB
from revelio.formats.removal import REMOVAL
from revelio.grid import POOLING_NAMES
from revelio.layout import MONOSEMANTICITY, PROBE_GRID, QUALITY_GATE, SAE_GRID, STEERING, metrics_file
from revelio.release.load import Release
from revelio.storage.files import read_json

CARD_TEMPLATE = Path(__file__).resolve().parents[2] / "hub_cards" / "release.md"


def markdown_table(values: dict[tuple[str, int], str], hooks: list[str], timesteps: list[int]) -> str:
    lines = ["| block | " + " | ".join(f"t={t}" for t in timesteps) + " |", "|---|" + "---|" * len(timesteps)]
    lines += [f"| {h} | " + " | ".join(values.get((h, t), "") for t in timesteps) + " |" for h in hooks]
    return "\n".join(lines)


def purity_tables(purity: dict | None, hooks: list[str], timesteps: list[int]) -> dict[str, str]:
    """One table per pooling of "SAE / random / neurons" purity (metrics/monosemanticity.json)."""

    tables = {}
    for pooling in dict.fromkeys(r["pooling"] for r in (purity or {}).get("cells", [])):
        cells = {(r["hook"], r["timestep"]): f"{r['sae']:.2f} / {r['random_directions']:.2f} / {r['neurons']:.2f}"
                 for r in purity["cells"] if r["pooling"] == pooling}
        tables[POOLING_NAMES[pooling]] = markdown_table(cells, hooks, timesteps)
    return tables


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def steering_summary(steering: dict | None, where: str) -> str:
    """The steering measurement (steering.json at ``where``) as a line of settings and a table per class."""
    if not steering:
        return ""
    side = steering["side_effect"]
    counts = ", ".join(f"{name}: {n}" for name, n in (steering.get("class_features_per_class") or {}).items())
    maps = (f"the maps of one held-out image per class, chosen from its first {steering['exemplars']} on separate seeds"
            if steering.get("exemplars") else steering["clamp_to"])
    lines = [f"Steering (`{where}`, `train/measure_steering.py`): {steering['features_per_class']} features per class"
             f"{f' ({counts})' if counts else ''} clamped at {', '.join(steering['cells'])} ({maps}, strength {steering['strength']:g}, "
             f"t {steering['window'][0]}..{steering['window'][1]}), {steering['num_inference_steps']} steps, judged by the "
             f"{steering['judge']}: **mean success {steering['mean_success']:.3f}** (unsteered {steering['mean_baseline']:.3f}); "
             f"unrelated features clamped the same way relabel {side['unrelated_class_change_rate']:.3f} of the images "
             f"(budget {steering['budget']:g}). Fréchet distances on the reference classifier's features to real images of "
             "the target class: steered, the same seeds unsteered, the model's own images of the class, real vs real.", "",
             "| target | success | unsteered | Fréchet steered | unsteered | model's own | real floor |", "|---|---|---|---|---|---|---|"]
    for name, row in steering["per_class"].items():
        lines.append(f"| {name} | {row['success']:.2f} | {row['baseline']:.2f} | {_number(row.get('frechet_steered'), 1)} | "
                     f"{_number(row.get('frechet_unsteered'), 1)} | {_number(row.get('frechet_model'), 1)} | "
                     f"{_number(row.get('frechet_real'), 1)} |")
    return "\n".join(lines)


def removal_summary(removal: dict | None) -> str:
    """The removal measurement (metrics/removal.json): settings, then UA / IRA / CRA, Fréchet distance and
    artifact share per concept for every method."""
    if not removal:
        return ""
    methods, base = removal["methods"], removal["baseline"]
    lines = [f"Concept removal (`metrics/removal.json`, `train/measure_removal.py`): {removal['features']} features per block "
             f"and sampler step at {', '.join(removal['hooks'])}, {removal['num_inference_steps']} steps, "
             f"{removal['images_per_source']} images per source, judged by the {removal['judge']}. UA: the removed concept is "
             "gone; IRA: the other concepts of its label set stay; CRA: the other label sets' concepts stay. The app removes "
             f"with **{removal['app_method']}** ({removal['app_method_reason']}). Unedited: Fréchet {base['frechet']:.1f} "
             f"(real vs real {base['frechet_real']:.1f}), artifact share {base['artifact_share']:.3f} (real "
             f"{base['artifact_share_real']:.3f}).", "",
             "| concept | " + " | ".join(f"{m}: UA / IRA / CRA | Fréchet / artifacts" for m in methods) + " |",
             "|---|" + "---|---|" * len(methods)]
    first = next(iter(methods.values()))
    for concept, row in first["per_concept"].items():
        cells = []
        for method in methods.values():
            r = method["per_concept"][concept]
            cells.append(f"{r['ua']:.2f} / {r['ira']:.2f} / {_number(r['cra'], 2)} | {r['frechet']:.1f} / {r['artifact_share']:.2f}")
        lines.append(f"| {concept} ({row['label_set']}) | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(
        f"**{m['mean_ua']:.3f} / {m['mean_ira']:.3f} / {_number(m['mean_cra'])}** | {m['mean_frechet']:.1f} / {m['artifact_share']:.3f}"
        for m in methods.values()) + " |")
    return "\n".join(lines)


def label_set_summary(name: str, names: list[str], probe_grid: dict, purity: dict | None, hooks: list[str],
                      timesteps: list[int]) -> dict:
    """What the card says of a further label set."""
    pixels = next((r["test_accuracy"] for r in probe_grid["rows"] if r["features"] == "pixels"), None)
    return {"name": name, "names": names, "best": probe_grid["best"], "pixels": "n/a" if pixels is None else f"{pixels:.3f}",
            "purity_tables": purity_tables(purity, hooks, timesteps)}


def render_card(info: dict, probe_grid: dict, sae_rows: list[dict], quality: dict | None, load_name: str, out: Path,
                purity: dict | None = None, label_sets: list[dict] | None = None, steering: list[str] | None = None,
                removal: str = "") -> None:
    """README.md from hub_cards/release.md: YAML metadata plus the grid tables; ``load_name`` is what
    ``load_release`` takes to open this release (its Hub repo id, "bundled", or its folder);
    ``label_sets``: each further label set's name, names, best probe, pixel baseline and purity tables;
    ``steering`` and ``removal``: :func:`steering_summary` per label set and :func:`removal_summary`."""
    from huggingface_hub import ModelCard, ModelCardData


    hooks, timesteps, best = info["hooks"], info["timesteps"], info["best_cell"]
    kind_rows = [r for r in probe_grid["rows"] if r["features"] == "diffusion" and r["probe"] == best["probe"]]
    probe_table = markdown_table({(r["hook"], r["timestep"]): f"{r['test_accuracy']:.3f}" for r in kind_rows}, hooks, timesteps)
    table_pooling = "mean" if "mean" in info["poolings"] else info["poolings"][0]
    sae_table = markdown_table(
        {(r["hook"], r["timestep"]): f"{r['normalized_mse']:.3f} / {100 * r['dead_fraction']:.1f}%" for r in sae_rows
         if r["pooling"] == table_pooling},
        hooks, timesteps,
    )
    pixels = next((r["test_accuracy"] for r in probe_grid["rows"] if r["features"] == "pixels"), None)
    data = ModelCardData(
        library_name="revelio", license="apache-2.0", tags=["sparse-autoencoder", "interpretability", "diffusion", "probing", "revelio"],
        base_model=None if info["backbone"] == "model" else info["backbone"],
        datasets=[FASHION_MNIST_HUB] if info["dataset"] in (FASHION_MNIST, COLOUR_FASHION_MNIST) else None if Path(info["dataset"]).exists() else [info["dataset"]],
        metrics=["accuracy", "normalized_mse"],
    )
    card = ModelCard.from_template(
        data, template_path=str(CARD_TEMPLATE), title=f"revelio release: {info.get('dataset_name') or info['dataset']}",
        backbone_name=info["backbone_name"], dataset=info.get("dataset_name") or info["dataset"], num_train_images=info["num_train_images"],
        hooks=hooks, timesteps=timesteps, poolings=info["poolings"], sae=info["sae"], probe_kinds=info["probe_kinds"],
        best=best, chance=probe_grid["chance"], quality=quality, repo_id=load_name, probe_table_kind=best["probe"],
        artifact_source=out.as_posix() if is_bundled(load_name) else load_name,
        probe_table=probe_table, sae_table=sae_table, table_pooling=table_pooling,
        table_pooling_name=POOLING_NAMES[table_pooling].split(" (")[0], pixel_baseline="n/a" if pixels is None else f"{pixels:.3f}",
        has_model=(out / "model" / "model_index.json").is_file(), commands=info["commands"],
        conditioning=info["conditioning"], prompt_template=info["prompt_template"], quality_gate_skipped=info["quality_gate_skipped"],
        purity_tables=purity_tables(purity, hooks, timesteps), purity_images=(purity or {}).get("images"),
        purity_top_k=(purity or {}).get("top_k"), label_sets=label_sets or [], default_label_set=info.get("default_label_set"),
        caption_template=info.get("caption_template"), noising=info.get("noising", "ddpm"),
        steering=[text for text in steering or [] if text], removal=removal,
    )
    card.save(out / "README.md")


def write_card(release: Release, load_name: str) -> None:
    """README.md of the release in its folder, from its files alone: after a build, or after a
    measurement (steering, removal) was redone, the card says what the metrics now say."""
    root = release.root
    # a bundled card names its folder as the repository does
    shown = root.resolve().relative_to(Path.cwd()) if root.resolve().is_relative_to(Path.cwd()) else root

    def metrics(name: str, view: Release = release) -> dict | None:
        path = metrics_file(view.labels_root, name)
        return read_json(path) if path.is_file() else None

    info, hooks, timesteps = release.info, release.info.hooks, release.info.timesteps
    views = [release.with_label_set(name) for name in release.label_sets[1:]]
    further = [label_set_summary(view.label_set_name, view.class_names, metrics(PROBE_GRID, view), metrics(MONOSEMANTICITY, view),
                                 hooks, timesteps) for view in views]
    steering = [steering_summary(found, metrics_file(view.labels_root, STEERING).relative_to(root).as_posix())
                for view in [release, *views] if (found := metrics(STEERING, view))]
    render_card(info.to_json(), metrics(PROBE_GRID), metrics(SAE_GRID)["rows"],
                None if info.quality_gate_skipped else metrics(QUALITY_GATE), load_name, shown, metrics(MONOSEMANTICITY),
                further, steering, removal_summary(metrics(REMOVAL)))
