"""The release's model card: README.md from hub_cards/release.md, with YAML metadata and grid tables."""

from __future__ import annotations

from pathlib import Path

from revelio.bundled import is_bundled
from revelio.data.datasets import COLOUR_FASHION_MNIST, FASHION_MNIST, FASHION_MNIST_HUB
from revelio.grid import POOLING_NAMES

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


def label_set_summary(name: str, names: list[str], probe_grid: dict, purity: dict | None, hooks: list[str],
                      timesteps: list[int]) -> dict:
    """What the card says of a further label set."""
    pixels = next((r["test_accuracy"] for r in probe_grid["rows"] if r["features"] == "pixels"), None)
    return {"name": name, "names": names, "best": probe_grid["best"], "pixels": "n/a" if pixels is None else f"{pixels:.3f}",
            "purity_tables": purity_tables(purity, hooks, timesteps)}


def render_card(info: dict, probe_grid: dict, sae_rows: list[dict], quality: dict | None, load_name: str, out: Path,
                purity: dict | None = None, label_sets: list[dict] | None = None) -> None:
    """README.md from hub_cards/release.md: YAML metadata plus the grid tables; ``load_name`` is what
    ``load_release`` takes to open this release (its Hub repo id, "bundled", or its folder);
    ``label_sets``: each further label set's name, names, best probe, pixel baseline and purity tables."""
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
    )
    card.save(out / "README.md")
