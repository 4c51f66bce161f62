"""Prompts for text-conditioned transformer backbones: one per image, encoded once and kept.

Extraction runs thousands of batches with one prompt (the empty one, or a template per class), and
the app a handful; encoding each prompt once keeps the text encoders (CLIP and T5, several
hundred million parameters on real models) out of every forward.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from revelio.errors import ConfigError

# Encoded prompts kept: extraction reuses one, an app a handful.
PROMPT_CACHE_SIZE = 32

Encoded = dict[str, torch.Tensor]


def prompt_list(condition: Any, batch_size: int) -> list[str]:
    """One prompt per image: ``None`` is the empty prompt, one string serves every image."""
    if condition is None:
        return [""] * batch_size
    if isinstance(condition, str):
        return [condition] * batch_size
    prompts = list(condition)
    if len(prompts) != batch_size or not all(isinstance(p, str) for p in prompts):
        raise ConfigError(f"pass one prompt string or a list of {batch_size} prompt strings")
    return prompts


class PromptCache:
    """Encoded prompts by text (batch of one each, oldest dropped first); batches concatenate them."""

    def __init__(self, encode: Callable[[str], Encoded]) -> None:
        self._encode = encode
        self._cache: OrderedDict[str, Encoded] = OrderedDict()

    def clear(self) -> None:
        self._cache.clear()

    @torch.no_grad()
    def get(self, prompt: str) -> Encoded:
        if prompt not in self._cache:
            if len(self._cache) >= PROMPT_CACHE_SIZE:
                self._cache.popitem(last=False)
            self._cache[prompt] = self._encode(prompt)
        return self._cache[prompt]

    def batch(self, prompts: list[str]) -> Encoded:
        """Each encoded tensor of every prompt, concatenated along the batch axis."""
        parts = [self.get(p) for p in prompts]
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
