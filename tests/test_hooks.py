"""Hook helpers always remove their hooks, also when the body raises."""

from __future__ import annotations

import pytest
import torch

from revelio.activations.hooks import (
    capture_outputs,
    replace_outputs,
)
from tests.leaks import count_forward_hooks


def _input(bb) -> tuple[torch.Tensor, int]:
    return torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)), 500


def test_capture_records_down_block_hidden_states_and_cleans_up(backbones):
    bb = backbones["pixel-class"]
    x, t = _input(bb)
    with torch.no_grad(), capture_outputs(bb.unet, ["down_blocks.1", "mid_block"]) as acts:
        bb.denoise(x, t)
    assert acts["down_blocks.1"].shape == (2, 16, 4, 4)  # the tuple's hidden state, not skips
    assert acts["mid_block"].shape == (2, 16, 4, 4)
    assert count_forward_hooks(bb.unet) == 0


def test_hooks_are_removed_when_the_body_raises(backbones):
    bb = backbones["pixel-class"]
    with pytest.raises(RuntimeError, match="boom"):
        with capture_outputs(bb.unet, ["mid_block"]), replace_outputs(bb.unet, {"up_blocks.0": lambda h: h}):
            assert count_forward_hooks(bb.unet) == 3  # 2 block hooks + capture's reset pre-hook
            raise RuntimeError("boom")
    assert count_forward_hooks(bb.unet) == 0


def test_replace_changes_the_output_and_only_inside_the_block(backbones):
    bb = backbones["pixel-class"]
    x, t = _input(bb)
    with torch.no_grad():
        before = bb.denoise(x, t)
        with replace_outputs(bb.unet, {"mid_block": lambda h: h * 0}):
            zeroed = bb.denoise(x, t)
        with replace_outputs(bb.unet, {"down_blocks.0": lambda h: None}):  # None: unchanged
            untouched = bb.denoise(x, t)
        after = bb.denoise(x, t)
    assert not torch.allclose(before, zeroed)
    assert torch.equal(before, untouched) and torch.equal(before, after)


def test_unknown_module_path_is_named(backbones):
    bb = backbones["pixel-class"]
    with pytest.raises(ValueError, match="no module 'middle_block'.*mid_block"):
        with capture_outputs(bb.unet, ["middle_block"]):
            pass
    assert count_forward_hooks(bb.unet) == 0
