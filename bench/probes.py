"""Benchmark: where the probe grid's time goes, today's fitting code against the previous one.

The bundled release's probe grid fits, per (hook, timestep) cell, a linear probe (pooled
features), an sae-linear probe (SAE codes of those) and a Diff-C probe (spatial maps, 5 epochs)
on 6000 training images (``probe_max_train``), 2000 test images; the same linear and Diff-C
probes on a random-weights copy of the model (4000 training images); and one raw-pixel linear
baseline. 4 hooks x 4 timesteps: 81 probes.

This bench fits each kind once per hook on real data shaped exactly like that: Fashion-MNIST
activations extracted here with the bundled release's backbone (``load_release("bundled")``) at
t=100, the release's own SAEs for sae-linear, and a random-weights copy (``randomize_weights``)
for the baseline rows. Each probe is fitted by

- baseline: the previous code, kept verbatim below (:class:`BaselineLinearProbe`: scikit-learn
  lbfgs on a dense float64 standardised copy, SAE codes densified first, 5 C values and a
  refit from scratch; :class:`BaselineDiffCProbe`: contiguous NCHW, ``nn.Dropout``, unchunked
  evaluation), and
- revelio: the package's ``LinearProbe.fit`` / ``DiffCProbe.fit`` as the grid now calls them
  (sae-linear on :class:`revelio.probes.SparseFeatures`),

alternately, in the same process, so load on the machine hits both alike. It prints each
probe's seconds and test accuracy under both, the grid's total (per-hook sums x 4 timesteps +
pixels) and the ratios new/old.

Run: ``.venv/bin/python bench/probes.py`` (about 15 minutes on 2 CPU cores; features are
extracted once into artifacts/bench-probes/).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import revelio  # noqa: E402
from revelio.probes import (  # noqa: E402
    DiffCProbe,
    LinearProbe,
    SparseFeatures,
    Split,
    split_train_validation,
)
from revelio.sae import KSparseAutoencoder  # noqa: E402
from revelio.storage.files import read_state, write_state  # noqa: E402

HOOKS = ["down_blocks.1", "mid_block", "up_blocks.0", "up_blocks.1"]
TIMESTEP, TIMESTEPS_IN_GRID = 100, 4
TRAIN, TEST, RANDOM_TRAIN = 6000, 2000, 4000  # the bundled build's probe_max_train, test_images, random_images
EPOCHS = 5  # the bundled build's probe_epochs
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
FEATURES = ROOT / "artifacts" / "bench-probes"


# --- the baseline: the previous fitting code, verbatim (only the class names differ) ------------
class BaselineLinearProbe(LinearProbe):
    """BASELINE (previous code): scikit-learn lbfgs on dense float64 standardised features."""

    kind = "baseline-linear"

    @classmethod
    def fit(cls, train: Split, validation: Split, class_names: list[str], max_iter: int = 300, **metadata: Any):
        from sklearn.linear_model import LogisticRegression

        x_train, x_val = train.features.double().numpy(), validation.features.double().numpy()
        mean, scale = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
        scores = {}
        for c in C_GRID:
            model = LogisticRegression(C=c, max_iter=max_iter)
            model.fit((x_train - mean) / scale, train.labels.numpy())
            scores[c] = model.score((x_val - mean) / scale, validation.labels.numpy())
        best_c = max(scores, key=lambda c: (scores[c], -c))
        x_all = np.concatenate([x_train, x_val])
        y_all = np.concatenate([train.labels.numpy(), validation.labels.numpy()])
        model = LogisticRegression(C=best_c, max_iter=max_iter).fit((x_all - mean) / scale, y_all)
        probe = cls.create(x_train.shape[1], class_names, **metadata)
        weight, bias = _baseline_full_weights(model, len(class_names))
        with torch.no_grad():
            probe.mean.copy_(torch.from_numpy(mean))
            probe.scale.copy_(torch.from_numpy(scale))
            probe.linear.weight.copy_(torch.from_numpy(weight))
            probe.linear.bias.copy_(torch.from_numpy(bias))
        probe.config.metrics.update(validation_accuracy=scores[best_c], l2_inverse_strength=best_c)
        return probe.eval()


def _baseline_full_weights(model: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """BASELINE: sklearn's coefficients expanded to every class (absent classes never win)."""
    weight = np.zeros((num_classes, model.coef_.shape[1]))
    bias = np.full(num_classes, -1e4)
    classes = model.classes_.astype(int)
    if len(classes) == 2 and model.coef_.shape[0] == 1:  # binary: sklearn keeps one row
        weight[classes[1]], bias[classes[1]] = model.coef_[0], model.intercept_[0]
        bias[classes[0]] = 0.0
    else:
        weight[classes], bias[classes] = model.coef_, model.intercept_
    return weight, bias


class BaselineDiffCProbe(DiffCProbe):
    """BASELINE (previous code): NCHW weights, nn.Dropout modules, whole-split evaluation."""

    kind = "baseline-diff-c"

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self._check_features(features, self.d_in, "spatial tokens [N, H*W, C]")
        maps = x.transpose(1, 2).reshape(x.shape[0], self.d_in, self.grid_side, self.grid_side)
        return self.head(self.body(self.input_norm(maps)).mean(dim=(2, 3)))

    @torch.no_grad()
    def predict_proba(self, features: torch.Tensor, batch_size: int = 0) -> torch.Tensor:
        return self(features).softmax(dim=-1)

    @torch.no_grad()
    def predict(self, features: torch.Tensor, batch_size: int = 0) -> torch.Tensor:
        return self(features).argmax(dim=-1)

    @classmethod
    def fit(cls, train: Split, validation: Split, class_names: list[str], grid_side: int, epochs: int = 30,
            batch_size: int = 128, lr: float = 1e-3, seed: int = 0, **metadata: Any):
        torch.manual_seed(seed)
        probe = cls.create(train.features.shape[-1], grid_side, class_names, **metadata)
        opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=1e-4)
        steps_per_epoch = math.ceil(len(train.labels) / batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
        best = (-1.0, probe.state())
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            probe.train()
            order = torch.randperm(len(train.labels), generator=generator)
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                if len(batch) < 2:
                    continue  # BatchNorm needs two samples
                loss = F.cross_entropy(probe(train.features[batch].float()), train.labels[batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
                schedule.step()
            probe.eval()
            accuracy = probe.accuracy(validation.features, validation.labels)
            if accuracy > best[0]:
                best = (accuracy, {k: v.clone() for k, v in probe.state().items()})
        probe.load_state(best[1])
        probe.config.metrics.update(validation_accuracy=best[0])
        return probe


# --- data ---------------------------------------------------------------------------------------
def load_features(refresh: bool) -> dict[str, dict[str, torch.Tensor]]:
    """{"train", "test", "random-train", "random-test"}: labels, pixels and per-hook fp16 tokens."""
    path = FEATURES / f"fashion-mnist-t{TIMESTEP}.safetensors"
    if path.is_file() and not refresh:
        return read_state(path)
    from revelio.data.datasets import load_image_dataset
    from revelio.data.images import to_pixels

    release = revelio.load_release("bundled")
    out = {}
    for random in (False, True):
        backbone = release.backbone(device="cpu")
        if random:
            backbone.randomize_weights(seed=0)
        for split, limit in (("train", RANDOM_TRAIN if random else TRAIN), ("test", TEST)):
            data = load_image_dataset("fashion-mnist", split, limit=limit, seed=0)
            start = time.perf_counter()
            tokens = revelio.extract(backbone, data.dataset, HOOKS, [TIMESTEP], pooling="none", batch_size=128,
                                     image_column=data.image_column, progress=False)
            print(f"extracted {split} ({'random weights' if random else 'bundled'}): {limit} images "
                  f"in {time.perf_counter() - start:.0f} s", flush=True)
            entry = {"labels": torch.tensor(data.labels)}
            # the cache's dtypes: fp16 rows; pooled = the float32 mean over tokens, stored as fp16
            entry |= {f"{hook}/none": tokens[(hook, TIMESTEP)].half() for hook in HOOKS}
            entry |= {f"{hook}/mean": tokens[(hook, TIMESTEP)].mean(dim=1).half() for hook in HOOKS}
            if not random:
                images = [row[data.image_column] for row in data.dataset]
                entry["pixels"] = to_pixels(images, backbone.resolution, backbone.image_channels).flatten(1)
            out[("random-" if random else "") + split] = entry
    write_state(out, path)
    return out


# --- the timed runs -----------------------------------------------------------------------------
def fit_linear(cls: type[LinearProbe], train: Any, labels: torch.Tensor, test: Any, test_labels: torch.Tensor, names):
    probe = cls.fit(*split_train_validation(train, labels, seed=0), names)
    return probe.accuracy(test, test_labels), probe.config.metrics["validation_accuracy"]


def run_kind(kind: str, which: str, data: dict, hook: str | None, names: list[str]) -> tuple[float, float, float]:
    """(seconds, test accuracy, validation accuracy) of one probe, as the grid computes it (reading aside)."""
    source = "random-" if kind.startswith("random") else ""
    train, test = data[source + "train"], data[source + "test"]
    y, y_test = train["labels"], test["labels"]
    linear = BaselineLinearProbe if which == "baseline" else LinearProbe
    start = time.perf_counter()
    if kind in ("linear", "random linear"):
        result = fit_linear(linear, train[f"{hook}/mean"].float(), y, test[f"{hook}/mean"].float(), y_test, names)
    elif kind == "pixels":
        result = fit_linear(linear, train["pixels"], y, test["pixels"], y_test, names)
    elif kind == "sae-linear":
        sae = KSparseAutoencoder.from_pretrained(ROOT / "releases" / "fashion-mnist" / "saes", subfolder=f"{hook}/t{TIMESTEP}/mean")
        with torch.no_grad():
            if which == "baseline":  # the previous grid: dense [N, d_sae] codes
                codes = [sae.encode(part[f"{hook}/mean"].float(), dense=True) for part in (train, test)]
            else:
                codes = [SparseFeatures.from_code(sae.encode(part[f"{hook}/mean"].float()), sae.d_sae) for part in (train, test)]
        result = fit_linear(linear, codes[0], y, codes[1], y_test, names)
    else:  # diff-c
        cls = BaselineDiffCProbe if which == "baseline" else DiffCProbe
        x, x_test = train[f"{hook}/none"].float(), test[f"{hook}/none"].float()
        probe = cls.fit(*split_train_validation(x, y, seed=0), names, grid_side=int(round(x.shape[1] ** 0.5)), epochs=EPOCHS, seed=0)
        result = probe.accuracy(x_test, y_test), probe.config.metrics["validation_accuracy"]
    return time.perf_counter() - start, *result


def warm_up(names: list[str]) -> None:
    """First calls pay one-time costs (imports, thread pools, optimiser set-up): pay them untimed."""
    x, y = torch.randn(200, 8), torch.arange(200) % len(names)
    for cls in (BaselineLinearProbe, LinearProbe):
        cls.fit(*split_train_validation(x, y), names)
    maps = torch.randn(40, 16, 4)
    for cls in (BaselineDiffCProbe, DiffCProbe):
        cls.fit(*split_train_validation(maps, torch.arange(40) % len(names)), names, grid_side=4, epochs=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hooks", nargs="+", default=HOOKS)
    parser.add_argument("--kinds", nargs="+", default=["linear", "sae-linear", "diff-c", "random linear", "random diff-c", "pixels"])
    parser.add_argument("--refresh", action="store_true", help="extract the features again")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # the baseline's lbfgs warns on every capped fit
    data = load_features(args.refresh)
    names = [str(i) for i in range(10)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}", flush=True)
    warm_up(names)
    rows = []
    print(f"{'kind':14s} {'hook':14s} {'old s':>8s} {'new s':>8s} {'new/old':>8s} {'old test':>9s} {'new test':>9s} {'old val':>8s} {'new val':>8s}")
    for kind in args.kinds:
        for hook in [None] if kind == "pixels" else args.hooks:
            old = run_kind(kind, "baseline", data, hook, names)
            new = run_kind(kind, "revelio", data, hook, names)
            rows.append((kind, hook, old, new))
            print(f"{kind:14s} {hook or '-':14s} {old[0]:8.1f} {new[0]:8.1f} {new[0] / old[0]:8.3f} "
                  f"{old[1]:9.4f} {new[1]:9.4f} {old[2]:8.4f} {new[2]:8.4f}", flush=True)
    print(f"\nper kind (sum over hooks; the grid has each {TIMESTEPS_IN_GRID}x, pixels once):")
    totals = {"old": 0.0, "new": 0.0}
    for kind in args.kinds:
        chosen = [r for r in rows if r[0] == kind]
        old, new = sum(r[2][0] for r in chosen), sum(r[3][0] for r in chosen)
        times = 1 if kind == "pixels" else TIMESTEPS_IN_GRID
        totals["old"] += times * old
        totals["new"] += times * new
        accuracy_old, accuracy_new = (np.mean([r[i][1] for r in chosen]) for i in (2, 3))
        print(f"  {kind:14s} old {old:7.1f} s  new {new:7.1f} s  new/old {new / old:6.3f}  (speed-up {old / new:5.1f}x)  "
              f"mean test accuracy old {accuracy_old:.4f} new {accuracy_new:.4f}")
    print(f"\nprobe grid (estimated: per-hook sums x {TIMESTEPS_IN_GRID} timesteps + pixels): old {totals['old'] / 60:.1f} min, "
          f"new {totals['new'] / 60:.1f} min, new/old {totals['new'] / totals['old']:.3f} "
          f"(speed-up {totals['old'] / totals['new']:.1f}x); load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
