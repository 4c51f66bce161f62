"""Label purity: a direction that fires on one class is pure, one blind to class is near chance,
and the SAE is scored against random directions and neurons on the same activations."""

from __future__ import annotations

import pytest
import torch

from revelio.analysis.monosemanticity import label_purity, purity_against_baselines
from revelio.sae.model import KSparseAutoencoder


def test_purity_is_one_for_a_class_feature_near_chance_for_a_blind_one_and_skips_dead_ones():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 4
    one_class = (labels == 2).float() * torch.rand(400, generator=generator)
    blind = torch.rand(400, generator=generator)
    dead = torch.zeros(400)
    purity = label_purity(torch.stack([one_class, blind, dead], dim=1), labels, top_k=50)
    assert len(purity) == 2, "a direction that never fires has no purity"
    assert purity[0] == pytest.approx(1.0)
    assert 0.25 <= purity[1] < 0.5


def test_spatial_activations_score_each_image_by_its_strongest_location():
    labels = torch.tensor([0, 0, 1, 1])
    spatial = torch.zeros(4, 3, 1)
    spatial[0, 2, 0] = spatial[1, 0, 0] = 1.0  # fires somewhere in class-0 images only
    sae = KSparseAutoencoder(d_in=1, d_sae=2, k=1)
    scores = purity_against_baselines(sae, spatial, labels, top_k=2)
    assert scores["neurons"] == pytest.approx(1.0) and scores["chance"] == 0.5
    assert set(scores) == {"sae", "random_directions", "neurons", "sae_live_features", "chance"}
