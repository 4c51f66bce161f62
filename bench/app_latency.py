"""Benchmark: the app's latency on the bundled default, as a client sees it, on this CPU.

Starts the app in this process, then times requests through ``gradio_client`` (upload, queue,
handler, response; output files are not downloaded, as a browser fetches them in parallel
afterwards):
- explore:  an uploaded test image -> top features, heatmaps, FVU (spatial SAE at the best cell);
- classify: an uploaded test image -> the best probe's top-5 classes;
- steer:    a 50-step steered generation with the app's defaults (the SAE, feature count,
            strength and window the release's steering measurement chose, and its further SAEs),
            plus its unsteered twin when the seed is new; and the same with three SAEs at once
            (the app's "also steer at": mid_block and up_blocks.0 too);
- remove:   Steer's Remove mode with the release's removal setting (metrics/removal.json), 50
            steps: the first request (preparing the removal: the held-out images at every sampler
            step) timed once, then removals with a new seed (removed + new unsteered).
Then steered / unsteered generation time, timed directly in the same run, interleaved, with the
same seed and steps (what the steering hooks cost): with the app's default window, with the
high-noise half only and with every step steered. Targets: explore p50 < 0.5 s, classify p50 <
0.3 s, steered / unsteered <= 1.15 (app defaults).

Run: ``.venv/bin/python bench/app_latency.py [--repeats 30]``.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def timed(call: Callable[[], object], repeats: int) -> list[float]:
    call()  # warm-up: first-use loading is not latency
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--steer-repeats", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()

    import torch
    from gradio_client import Client, handle_file

    from revelio.app import create_demo
    from revelio.app.state import AppState
    from revelio.app.steer_request import steering_defaults
    from revelio.app.tabs.steer import SteerTab
    from revelio.app.uploads import MAX_UPLOAD_BYTES
    from revelio.formats.removal import REMOVAL, Removal
    from revelio.release import load_release
    from revelio.release.removal_measurement import prepare_removal
    from revelio.steering import FeatureEdit, steer

    demo = create_demo("bundled")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, max_file_size=MAX_UPLOAD_BYTES, quiet=True)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)

    release = load_release("bundled")
    images, labels = release.held_out_examples()
    image_path = Path(tempfile.mkdtemp()) / "test-image.png"
    images[labels.index(1)].save(image_path)
    hook, timestep = release.best_cell.hook, release.best_cell.timestep
    state = AppState(release)
    defaults = steering_defaults(state)
    steer_hook, steer_t, window = defaults.cell.hook, defaults.cell.timestep, defaults.window
    features = client.predict(steer_hook, steer_t, "none", 9, defaults.count, api_name="/suggest_features")
    seeds = iter(range(10_000))
    also = [cell.spec for cell in defaults.also]
    several = ["mid_block", "up_blocks.0", "up_blocks.1"]
    three = [f"{h}:{steer_t}" for h in several if h != steer_hook]

    def steer_request(also_at: list[str]) -> object:
        return client.predict(0, next(seeds), args.steps, 2.5, steer_hook, steer_t, "none", features, "class-map", 9,
                              defaults.strength, *window, None, None, also_at, api_name="/steer")

    def remove_request() -> object:
        return client.predict(9, next(seeds), args.steps, 2.5, 9, api_name="/remove")

    start = time.perf_counter()
    remove_request()
    first_remove = time.perf_counter() - start

    results = {
        "explore": timed(lambda: client.predict(handle_file(str(image_path)), hook, timestep, "none", api_name="/explore"), args.repeats),
        "classify": timed(lambda: client.predict(handle_file(str(image_path)), hook, timestep, release.info.best_cell.probe,
                                                 api_name="/classify"), args.repeats),
        f"steer ({args.steps} steps, steered + new unsteered)": timed(lambda: steer_request(also), args.steer_repeats),
        f"steer, 3 SAEs at once ({args.steps} steps, same)": timed(lambda: steer_request(three), args.steer_repeats),
        f"remove ({args.steps} steps, removed + new unsteered)": timed(remove_request, args.steer_repeats),
    }
    demo.close()

    backbone, tab = state.backbone, SteerTab(state)

    def app_edits(also_at: list[str], window: tuple[int, int]) -> list[FeatureEdit]:
        """Class 9's features clamped to its maps at the main SAE and ``also_at``, as the app makes them."""
        request = tab.request(0, 0, args.steps, 2.5, steer_hook, steer_t, "none", features, "class-map", 9, defaults.strength,
                              *window, None, None, also_at)
        return [FeatureEdit(state.sae(cell), clamp=clamp, timesteps=request.window)
                for cell, clamp in tab.generator.clamps(request).items()]

    app_window = f"app default window t={window[0]}..{window[1]}"
    windows = {"high-noise half t=999..500": (999, 500), "every step t=999..0": (999, 0)}
    windows = {app_window: window, **{name: w for name, w in windows.items() if w != window}}  # each window timed once
    edits = {name: app_edits(also, window) for name, window in windows.items()}
    edits[f"three SAEs at once ({', '.join(several)} t={steer_t}), every step"] = app_edits(three, (999, 0))
    removal = release.read_metrics(REMOVAL, Removal)
    if removal is not None:
        setup = prepare_removal(release, backbone, ["class"], removal.hooks, args.steps)
        edits[f"removing Ankle boot ({removal.app_method} at {', '.join(removal.hooks)}), every step"] = setup.edits(
            "class", 9, removal.app_method, removal.features, removal.multiplier)
    times: dict[str, list[float]] = {"unsteered": [], **{name: [] for name in edits}}
    for seed in range(args.steer_repeats + 1):
        for name in times:
            start = time.perf_counter()
            if name == "unsteered":
                backbone.generate(0, seed=seed, num_inference_steps=args.steps, guidance_scale=2.5)
            else:
                with steer(backbone, edits[name]):
                    backbone.generate(0, seed=seed, num_inference_steps=args.steps, guidance_scale=2.5)
            if seed:  # seed 0 warms up every path
                times[name].append(time.perf_counter() - start)

    print(f"app latency on the bundled release ({args.repeats} requests each; torch threads {torch.get_num_threads()})")
    print(f"{'request':<48} {'p50 s':>8} {'p95 s':>8}")
    print(f"{'remove, first request (prepares the removal)':<48} {first_remove:8.3f}")
    for name, seconds in results.items():
        p50, p95 = percentiles(seconds)
        print(f"{name:<48} {p50:8.3f} {p95:8.3f}")
    base = statistics.median(times["unsteered"])
    print(f"(3 SAEs at once: {steer_hook}:{steer_t} with {', '.join(three)}; remove: class 9 from class 9, "
          f"{removal.app_method if removal else 'the app default'})")
    print(f"\ngeneration, {args.steps} steps, guidance 2.5, {len(features)} features clamped to class maps at {steer_hook} "
          f"t={steer_t} (spatial SAE){' and ' + ', '.join(also) if also else ''}; unsteered median {base:.3f} s")
    for name in edits:
        print(f"steered, {name}: median {statistics.median(times[name]):.3f} s, "
              f"steered / unsteered = {statistics.median(times[name]) / base:.3f}")
    ratio = statistics.median(times[app_window]) / base
    explore_p50, classify_p50 = percentiles(results["explore"])[0], percentiles(results["classify"])[0]
    print(f"targets: explore p50 {explore_p50:.3f} < 0.5: {explore_p50 < 0.5}; classify p50 {classify_p50:.3f} < 0.3: "
          f"{classify_p50 < 0.3}; ratio (app defaults) {ratio:.3f} <= 1.15: {ratio <= 1.15}")


if __name__ == "__main__":
    main()
