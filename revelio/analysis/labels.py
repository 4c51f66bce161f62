"""Feature labels backed by evidence: a class name only where the training data single one out.

``stats.safetensors`` stores each feature's *activation-weighted* label distribution over the
training images it fires on (not the labels of its exemplars), so a label's share alone says
nothing of how much data backs it: "Ankle boot (11%)" with ten classes is chance, and "Pullover
(22%)" beside "Shirt 21%" names neither. A feature is named after its top class only when two
exact binomial tests, on its effective number of training images, both reject at ``ALPHA``:

- **above chance**: one-sided, the top class's count against chance ``1 / classes``, Bonferroni
  corrected for picking the top of all classes (``classes`` x the tail);
- **ahead of the runner-up**: the sign test (conditional binomial, ``1/2``) of the top class's
  count against the second's, two-sided since the top was picked by looking.

The effective number of images is Kish's ``(sum w)^2 / sum w^2`` for activation weights ``w``,
bounded below by ``sum w / max w`` (``sum w^2 <= max w * sum w``): images fired on x mean
activation / max activation, all stored. The number of images fired on is ``image_frequency``
times the cache's image count, which the stats do not store but their frequencies pin down (every
one is a whole count over it; the smallest such count errs low, so towards "mixed"); where that
fails the feature's exemplar count stands in. Exact
tests because counts are small where it matters (a few dozen effective images), where normal
approximations are wrong. Everything comes from the stored statistics, so releases need no
rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy.special import bdtrc  # scikit-learn's dependency: exact binomial tails

from revelio.sae.stats import DEAD, FeatureStats

ALPHA = 0.01
MIXED = "mixed"
RULE = ("a class names a feature only when its share of the feature's activation beats chance (1/classes) and "
        "the runner-up class, each by an exact binomial test at p < 0.01 on the training images it fires on; "
        "otherwise the feature is *mixed* and its top two classes are shown")


@dataclass(frozen=True)
class FeatureLabel:
    """One feature's label and the evidence behind it."""

    top: tuple[tuple[str, float], ...]  # (class, share of activation), the top two, largest first
    named: bool  # the top class passed both tests
    images: float  # effective number of training images behind the shares
    p_chance: float  # the top class against chance (Bonferroni-corrected)
    p_runner_up: float  # the top class against the second
    dead: bool = False

    @property
    def name(self) -> str | None:
        """The class the feature is named after, or None (mixed, dead or unlabelled)."""
        return self.top[0][0] if self.named and self.top else None

    def __str__(self) -> str:
        if self.dead:
            return DEAD
        if not self.top:
            return ""
        if self.named:
            return f"{self.top[0][0]} ({round(100 * self.top[0][1])}%)"
        return f"{MIXED}: " + ", ".join(f"{name} {round(100 * share)}%" for name, share in self.top)

    @property
    def short(self) -> str:
        """The label without the mixed feature's classes (chart axes, where long labels are cut)."""
        return MIXED if self.top and not self.named and not self.dead else str(self)

    def evidence(self, chance: float) -> str:
        """One line saying why it is named or mixed."""
        if self.dead or not self.top:
            return "It never fired on the training images." if self.dead else "The release has no labels."
        shares = ", ".join(f"{name} {100 * share:.0f}%" for name, share in self.top)
        verdict = (f"named {self.top[0][0]}" if self.named else
                   "mixed: " + ("not above chance" if self.p_chance >= ALPHA else "its top class is not clearly ahead of the next"))
        return (f"Label: {verdict} ({shares} of its activation; chance {100 * chance:.0f}%; about {self.images:.0f} "
                f"effective training images; p = {self.p_chance:.2g} against chance, {self.p_runner_up:.2g} against the "
                f"runner-up, exact binomial tests, named below {ALPHA:g}).")


def image_count(image_frequency: torch.Tensor, largest: int = 10**7) -> int | None:
    """The number of images the frequencies were counted over: the smallest N making every
    ``frequency * N`` whole (within float32 rounding); None when no N up to ``largest`` does."""
    freq = torch.unique(image_frequency[image_frequency > 0].double())
    if not len(freq):
        return None
    probe = freq[torch.linspace(0, len(freq) - 1, min(len(freq), 32)).round().long()]
    smallest = float(freq[0])
    for start in range(1, int(largest * smallest) + 2, 4096):  # candidates: N = count / smallest frequency
        n = (torch.arange(start, start + 4096, dtype=torch.float64) / smallest).round()
        n = n[(n >= 1) & (n <= largest)]
        if not len(n):
            return None
        scaled = probe[None, :] * n[:, None]
        whole = ((scaled - scaled.round()).abs() <= 1e-6 * n[:, None] + 1e-3).all(1)
        if whole.any():
            found = float(n[whole][0])
            scaled = freq * found
            return int(found) if bool(((scaled - scaled.round()).abs() <= 1e-6 * found + 1e-3).all()) else None
    return None


def binomial_tail(k: torch.Tensor, n: torch.Tensor, p: float) -> torch.Tensor:
    """P(X >= k) for X ~ Binomial(n, p), exactly (1 where k <= 0)."""
    k, n = k.double().floor(), n.double().floor()
    tail = torch.from_numpy(bdtrc((k - 1).clamp_min(0).long().numpy(), n.long().numpy(), p))
    return torch.where(k <= 0, 1.0, torch.where(k > n, 0.0, tail))


def evidence_labels(stats: FeatureStats, class_names: Sequence[str]) -> list[FeatureLabel]:
    """Every feature's :class:`FeatureLabel` under the module's rule (see the module's docstring)."""
    d_sae = len(stats.labels)
    classes = stats.label_distribution.shape[1]
    if classes == 0 or len(class_names) != classes:
        return [FeatureLabel((), False, 0.0, 1.0, 1.0, dead=stats.labels[f] == DEAD) for f in range(d_sae)]
    total = image_count(stats.image_frequency)
    exemplars = (stats.top_images >= 0).sum(1).double()
    fired = exemplars if total is None else (stats.image_frequency.double() * total).round()
    images = (fired * stats.mean_activation.double() / stats.max_activation.double().clamp_min(1e-12)).floor().clamp_min(0)
    shares, order = stats.label_distribution.double().topk(min(2, classes), dim=1)
    first = (shares[:, 0] * images).floor()
    second = (shares[:, 1] * images).floor() if classes > 1 else torch.zeros_like(first)
    p_chance = (classes * binomial_tail(first, images, 1 / classes)).clamp(max=1.0)
    p_runner_up = (2 * binomial_tail(first, first + second, 0.5)).clamp(max=1.0)
    live = stats.firing_frequency > 0
    named = live & (p_chance < ALPHA) & (p_runner_up < ALPHA)
    return [
        FeatureLabel(tuple((class_names[int(c)], float(s)) for c, s in zip(order[f], shares[f])) if live[f] else (),
                     bool(named[f]), float(images[f]), float(p_chance[f]), float(p_runner_up[f]), dead=not bool(live[f]))
        for f in range(d_sae)
    ]
