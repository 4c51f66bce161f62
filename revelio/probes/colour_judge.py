"""Judges for colour text-to-image samples: their grey image (for a classifier of grey garments)
and their colour (the nearest palette hue).

Colour Fashion-MNIST tints a grey garment by multiplying it with a palette colour that has one
channel at 255, so the channel maximum (HSV's value) gives the grey image back exactly, and the
hue of the garment's saturated pixels names the colour. Both read samples, never model features.
"""

from __future__ import annotations

import colorsys

import torch

# A pixel votes for a colour when it is this saturated and this bright (HSV, 0..1): the black
# background and dim, washed-out edge pixels have no reliable hue.
MIN_SATURATION = 0.4
MIN_VALUE = 0.2


def grey(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] RGB in [0, 1] -> [N, 1, H, W] grey in [-1, 1] (the channel maximum)."""
    return images.amax(1, keepdim=True) * 2 - 1


def hue_degrees(rgb: tuple[int, int, int]) -> float:
    return colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] * 360


def judge_colours(images: torch.Tensor, palette: list[tuple[int, int, int]]) -> torch.Tensor:
    """The palette index each image's saturated pixels vote for most by nearest hue ([N], long);
    -1 for an image with no saturated pixel."""
    images = images.clamp(0, 1)
    value, low = images.amax(1), images.amin(1)
    saturation = torch.where(value > 0, (value - low) / value.clamp_min(1e-6), torch.zeros_like(value))
    hue = _hue(images, value, low)
    targets = torch.tensor([hue_degrees(rgb) for rgb in palette])
    distance = (hue[..., None] - targets).abs() % 360
    nearest = torch.minimum(distance, 360 - distance).argmin(-1)  # [N, H, W]
    voting = (saturation >= MIN_SATURATION) & (value >= MIN_VALUE)
    votes = torch.stack([((nearest == k) & voting).flatten(1).sum(1) for k in range(len(palette))], 1)
    return torch.where(voting.flatten(1).any(1), votes.argmax(1), torch.full_like(votes[:, 0], -1))


def _hue(images: torch.Tensor, value: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """HSV hue in degrees per pixel ([N, H, W]); 0 where the pixel is grey."""
    r, g, b = images.unbind(1)
    span = (value - low).clamp_min(1e-6)
    hue = torch.where(value == r, ((g - b) / span) % 6, torch.where(value == g, (b - r) / span + 2, (r - g) / span + 4))
    return torch.where(value > low, hue * 60, torch.zeros_like(hue))
