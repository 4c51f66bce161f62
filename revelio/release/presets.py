"""Named settings for train/build_release.py: a first look in minutes, or the paper's setting.

A preset is a list of flags put before the user's own, so any flag given on the command line
still wins, and the command recorded in release.json (with ``--preset``) rebuilds the same release.
"""

from __future__ import annotations

from revelio.errors import ConfigError

PRESETS: dict[str, list[str]] = {
    "default": [],
    # minutes on a 2-core CPU for a small model: few images and timesteps, short SAE training
    "smoke": [
        "--timesteps", "100", "500", "--train-images", "500", "--test-images", "200", "--random-images", "200",
        "--held-out-per-class", "5", "--pooled-sae-expansion", "4", "--pooled-sae-tokens", "20000",
        "--pooled-sae-batch-size", "256", "--pooled-sae-warmup-steps", "10", "--spatial-sae-expansion", "4",
        "--spatial-sae-tokens", "200000", "--spatial-sae-warmup-steps", "10", "--probe-epochs", "5",
        "--probe-max-train", "500", "--gate-per-class", "20", "--gate-epochs", "3", "--steering-per-source", "1",
        "--steering-steps", "10", "--steering-strengths", "2",
    ],
    # the paper's setting for SD1.5 (block outputs of the middle and first two up blocks, t=25, 16x SAEs with k 32)
    "paper": [
        "--hooks", "mid_block", "up_blocks.0", "up_blocks.1", "--timesteps", "25", "--pooled-sae-expansion", "16",
        "--pooled-sae-k", "32", "--spatial-sae-expansion", "16", "--spatial-sae-k", "32",
    ],
}


def preset_flags(name: str) -> list[str]:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
    return list(PRESETS[name])
