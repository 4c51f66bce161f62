"""Remove a concept during generation: find its SAE features, then take the concept out where they fire.

Which features (the score of SAeUron, Cywiński & Deja 2025): for every feature, the share of the
code's activation mass it carries on the concept's images minus that share on the other images,
from the activations of labelled images noised to one timestep (:class:`ConceptStatistics`, one per
hook and sampler timestep). The highest-scoring features are the concept's.

Which images: those whose evidence (the chosen features' summed activation, averaged over
locations) is above the threshold that best separates the concept's images from the others, decided
at the first step of each generation and kept (:class:`ConceptRemoval` says why).

Where: at the locations where one of the chosen features fires above its mean activation on the
other images (zeros included), so a location that merely shares a feature with every concept at its
usual level is left alone.

How, two methods:

- ``"ablate"``: the features become ``multiplier`` x their value there (0 ablates them; SAeUron
  scales by a negative one), the block outputs ``x + decode(new) - decode(old)`` and the SAE's
  error stays in the activation (the edit of :class:`~revelio.steering.edits.FeatureEdit`);
- ``"replace"``: the whole activation there becomes the mean activation of the images without the
  concept at that location and timestep. Editing latents can push an activation where the block
  never goes ("Look But Don't Touch", 2026); an activation the block produces on other images
  cannot be out of its distribution.

A spatial SAE ("none" pooling) that scales its inputs (revelio's) is needed: removal works per location.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from revelio.activations.capture import to_tokens
from revelio.hook_points import canonical
from revelio.models.backbone import Backbone
from revelio.sae.model import KSparseAutoencoder
from revelio.steering.edits import check_width, frame_rows, kept_in_frame

Method = Literal["ablate", "replace"]
METHODS: tuple[Method, ...] = ("ablate", "replace")


@dataclass
class ConceptStatistics:
    """What one SAE sees of each concept of a label set, from labelled images at its cell.

    ``image_code`` [N, d_sae]: each image's code averaged over locations (zeros included), with
    its ``labels`` [N]; ``mean_tokens`` [n_concepts, T, C]: each concept's mean activation at each
    location; ``counts`` [n_concepts]: images per concept.
    """

    image_code: torch.Tensor
    labels: torch.Tensor
    mean_tokens: torch.Tensor
    counts: torch.Tensor

    @classmethod
    @torch.no_grad()
    def from_tokens(cls, sae: KSparseAutoencoder, tokens: torch.Tensor, labels: Sequence[int], n_concepts: int) -> ConceptStatistics:
        """From the spatial activations [N, T, d_in] of labelled images (``extract(..., pooling="none")``)."""
        if tokens.ndim != 3 or tokens.shape[-1] != sae.d_in:
            raise ValueError(f"tokens must be [images, locations, {sae.d_in}]; got shape {tuple(tokens.shape)}")
        labels = torch.as_tensor(list(labels), dtype=torch.long)
        if len(labels) != len(tokens):
            raise ValueError(f"{len(labels)} labels for {len(tokens)} images")
        counts = torch.bincount(labels, minlength=n_concepts)
        if len(counts) > n_concepts or bool((counts == 0).any()):
            raise ValueError(f"every concept id 0..{n_concepts - 1} needs images (and no other ids); got counts {counts.tolist()}")
        code = sae.encode(tokens)  # sparse [N, T, k]
        sums = torch.zeros(len(tokens), sae.d_sae)
        rows = torch.arange(len(tokens)).view(-1, 1, 1).expand_as(code.indices)
        sums.index_put_((rows.flatten(), code.indices.cpu().flatten()), code.values.detach().float().cpu().flatten(), accumulate=True)
        token_sums = torch.zeros(n_concepts, *tokens.shape[1:]).index_add_(0, labels, tokens.float())
        return cls(sums / tokens.shape[1], labels, token_sums / counts.view(-1, 1, 1), counts)

    @property
    def n_concepts(self) -> int:
        return len(self.counts)

    @property
    def mean_code(self) -> torch.Tensor:
        """[n_concepts, d_sae]: each feature's mean activation on each concept's images."""
        sums = torch.zeros(self.n_concepts, self.image_code.shape[1]).index_add_(0, self.labels, self.image_code)
        return sums / self.counts.view(-1, 1)

    def _check(self, concept: int) -> None:
        if not 0 <= concept < self.n_concepts:
            raise ValueError(f"concept id {concept} is out of range 0..{self.n_concepts - 1}")
        if self.n_concepts < 2:
            raise ValueError("removing a concept needs images of at least one other concept to compare with")

    def others(self, concept: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean code [d_sae] and mean activation map [T, C] of the images without ``concept``."""
        self._check(concept)
        weight = self.counts.float().clone()
        weight[concept] = 0
        weight /= weight.sum()
        return weight @ self.mean_code, torch.einsum("n,ntc->tc", weight, self.mean_tokens)

    def scores(self, concept: int) -> torch.Tensor:
        """[d_sae]: SAeUron's score, the share of activation mass on the concept minus on the others."""
        others, _ = self.others(concept)
        own = self.mean_code[concept]
        return own / own.sum().clamp_min(1e-12) - others / others.sum().clamp_min(1e-12)

    def features(self, concept: int, n: int) -> list[int]:
        """The ``n`` highest-scoring features of ``concept`` (only positive scores: fewer may come back)."""
        scores = self.scores(concept)
        return [int(f) for f in scores.argsort(descending=True, stable=True)[:n] if scores[f] > 0]

    def gate(self, concept: int, features: list[int]) -> float:
        """The evidence (the features' summed activation, averaged over locations) above which an
        image shows ``concept``: the threshold that best separates its images from the others
        (highest mean of the two recognition rates, halfway between neighbouring images)."""
        evidence = self.image_code[:, features].sum(-1)
        order = evidence.argsort()
        is_concept = (self.labels == concept)[order].float()
        # Threshold after position i: concept images above it are recognised, other images at or below it are kept.
        hits = is_concept.flip(0).cumsum(0).flip(0)[1:] / is_concept.sum()
        passes = (1 - is_concept).cumsum(0)[:-1] / (1 - is_concept).sum()
        best = int(((hits + passes) / 2).argmax())
        ordered = evidence[order]
        return float((ordered[best] + ordered[best + 1]) / 2)

    def step(self, sae: KSparseAutoencoder, concept: int, n: int, method: Method) -> StepRemoval | None:
        """What removes ``concept`` at this SAE's step with its ``n`` best features (None: no feature qualifies)."""
        features = self.features(concept, n)
        if not features:
            return None
        others_code, others_tokens = self.others(concept)
        return StepRemoval(sae, features, others_code[features], self.gate(concept, features),
                           others_tokens if method == "replace" else None)


@dataclass
class StepRemoval:
    """What removes a concept at one sampler timestep: the SAE, its chosen ``features``, their firing
    ``thresholds`` [n] (their mean on the other images), the ``gate`` (evidence above which an image
    shows the concept) and, for "replace", the ``replacement`` [T, C] (the others' mean activation map)."""

    sae: KSparseAutoencoder
    features: list[int]
    thresholds: torch.Tensor
    gate: float
    replacement: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.sae.config.pooling == "mean":
            raise ValueError("removal works per location and needs a spatial SAE (pooling 'none'); this one is pooled")
        if self.sae.config.input_normalization != "scale":
            raise ValueError("removal needs an SAE that scales its inputs (revelio's); a unit_norm SAE's edits depend on each row's std")
        if not self.features or any(not 0 <= f < self.sae.d_sae for f in self.features):
            raise ValueError(f"features must be a non-empty list of ids in 0..{self.sae.d_sae - 1}; got {self.features}")
        self.thresholds = torch.as_tensor(self.thresholds, dtype=torch.float32).reshape(-1)
        if len(self.thresholds) != len(self.features):
            raise ValueError(f"{len(self.thresholds)} thresholds for {len(self.features)} features")
        if self.replacement is not None and (self.replacement.ndim != 2 or self.replacement.shape[1] != self.sae.d_in):
            raise ValueError(f"the replacement must be [locations, {self.sae.d_in}]; got shape {tuple(self.replacement.shape)}")
        self._chosen = torch.tensor(self.features, device=self.sae.W_dec.device)
        self._decoder = self.sae.W_dec[self._chosen].detach() / self.sae.input_scale

    @torch.no_grad()
    def values(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, T, n]: the chosen features' values in the SAE's top-k code of tokens [N, T, C] (0 where not kept)."""
        centred, _ = frame_rows(self.sae, tokens)
        return kept_in_frame(self.sae, centred, self._chosen).view(*tokens.shape[:-1], -1)

    def shows(self, values: torch.Tensor) -> torch.Tensor:
        """[N] bool: which images show the concept (their evidence is above the gate)."""
        return values.sum(-1).mean(-1) > self.gate

    def remove(self, tokens: torch.Tensor, values: torch.Tensor, firing: torch.Tensor, method: Method, multiplier: float,
               out: torch.Tensor) -> torch.Tensor:
        """Tokens [N, T, C] with the concept removed where ``firing`` ([N, T, n]: the chosen features'
        ``values`` fire), written into ``out`` (a [N, T, C] view of the block's own layout)."""
        if method == "ablate":
            delta = (multiplier - 1) * (values * firing) @ self._decoder  # decode(new) - decode(old)
            return torch.add(tokens, delta.to(tokens), out=out)
        if self.replacement.shape[0] != tokens.shape[1]:
            raise ValueError(f"the replacement map has {self.replacement.shape[0]} locations; this block has {tokens.shape[1]} here")
        where = firing.any(-1, keepdim=True).to(tokens.device)
        return torch.where(where, self.replacement.to(tokens), tokens, out=out)


@dataclass
class ConceptRemoval:
    """Remove a concept at one hook during generation: an :class:`~revelio.steering.edits.Edit`
    (``revelio.steer(backbone, [removal, ...])``).

    ``steps`` maps sampler timesteps to what removes the concept there; a denoiser call uses the
    step nearest its timestep. Which images show the concept is decided at the first step of each
    generation (the highest-noise step, where the evidence reads what the model was asked to draw)
    and kept until the next generation starts (its timestep rises again, or the batch changes):
    deciding again at every step lets false detections on the others pile up at low noise and
    lets the concept grow back once removal has hidden it. In those images, at the locations where
    a chosen feature fires above its threshold, ``"ablate"`` multiplies the chosen features by
    ``multiplier`` (0 ablates; SAeUron uses negative ones) keeping the SAE's error, and
    ``"replace"`` puts the step's replacement in place of the activation.
    """

    hook: str
    steps: dict[int, StepRemoval]
    method: Method = "ablate"
    multiplier: float = 0.0
    _decided: tuple[float, torch.Tensor] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.hook = canonical(self.hook)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}; got {self.method!r}")
        if not self.steps:
            raise ValueError("no step to remove at: pass steps={timestep: StepRemoval}")
        if self.method == "replace" and any(step.replacement is None for step in self.steps.values()):
            raise ValueError("method 'replace' needs a replacement map at every step")
        self._timesteps = torch.tensor(sorted(self.steps), dtype=torch.float32)

    def check_against(self, backbone: Backbone) -> None:
        for step in self.steps.values():
            check_width(backbone, self.hook, step.sae)

    def reset(self) -> None:
        self._decided = None

    def step_at(self, timestep: torch.Tensor | float) -> StepRemoval:
        """The step nearest ``timestep``."""
        t = float(torch.as_tensor(timestep).flatten()[0])
        return self.steps[int(self._timesteps[(self._timesteps - t).abs().argmin()])]

    @torch.no_grad()
    def apply(self, output: torch.Tensor, timestep: torch.Tensor | None) -> torch.Tensor:
        """The block output with the concept removed ([N, C, H, W] maps or [N, T, C] tokens)."""
        if timestep is None:
            raise RuntimeError("removal needs the denoiser's timestep; none was seen")
        t = float(torch.as_tensor(timestep).flatten()[0])
        step = self.step_at(t)
        tokens = to_tokens(output)
        values = step.values(tokens)
        if self._decided is None or t > self._decided[0] or len(self._decided[1]) != len(tokens):
            self._decided = (t, step.shows(values))  # a new generation: decide which images show the concept
        shows = self._decided[1]
        self._decided = (t, shows)
        firing = (values > step.thresholds.to(values)) & shows.view(-1, 1, 1).to(values.device)
        edited = torch.empty_like(output)
        step.remove(tokens, values, firing, self.method, self.multiplier, out=to_tokens(edited))
        return edited


def concept_removal(hook: str, statistics: dict[int, tuple[KSparseAutoencoder, ConceptStatistics]], concept: int, n: int,
                    method: Method, multiplier: float = 0.0) -> ConceptRemoval | None:
    """The removal of ``concept`` at ``hook`` from per-timestep statistics ({sampler t: (SAE, statistics)}),
    with ``n`` features per step; None when no step has a feature for it."""
    steps = {t: step for t, (sae, stats) in statistics.items() if (step := stats.step(sae, concept, n, method)) is not None}
    return ConceptRemoval(hook, steps, method, multiplier) if steps else None
