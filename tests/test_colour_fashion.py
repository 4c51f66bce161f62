"""Colour Fashion-MNIST (derived data for the text model), its judges and the whole-word tokenizer."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from revelio.data.colour_fashion import CLASS_WORDS, COLOURS, PALETTE, caption, tint
from revelio.data.datasets import FASHION_MNIST_DIR, load_fashion_mnist, load_image_dataset
from revelio.models.word_tokenizer import word_tokenizer
from revelio.probes.colour_judge import grey, judge_colours


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist (make setup installs it)")
def test_colour_fashion_mnist_is_captioned_tinted_and_balanced():
    data = load_image_dataset("colour-fashion-mnist", "test")
    assert (data.image_column, data.label_column, data.class_names) == ("image", "class", CLASS_WORDS)
    rows = data.dataset
    assert rows.features["colour"].names == COLOURS and len(rows) == 10_000
    assert all(c == caption(COLOURS[k], CLASS_WORDS[y]) for c, y, k in zip(rows["caption"], rows["class"], rows["colour"]))
    counts = Counter(zip(rows["class"], rows["colour"]))
    assert len(counts) == 60 and max(counts.values()) - min(counts.values()) <= 1, "every colour equally often in every class"
    rgb = torch.from_numpy(np.stack([np.asarray(image) for image in rows["image"][:500]])).permute(0, 3, 1, 2) / 255
    original = torch.from_numpy(np.stack([np.asarray(image) for image in load_fashion_mnist("test")["image"][:500]]))
    assert rgb.shape[1:] == (3, 32, 32) and torch.equal(grey(rgb)[:, 0, 2:30, 2:30], original / 127.5 - 1)
    assert torch.equal(judge_colours(rgb, list(PALETTE.values())), torch.tensor(rows["colour"][:500]))


def test_the_colour_judge_reads_hue_and_ignores_the_black_background():
    garment = np.zeros((len(PALETTE), 28, 28), dtype=np.uint8)
    garment[:, 8:20, 10:18] = 180
    images = torch.from_numpy(tint(garment, np.arange(len(PALETTE)))).permute(0, 3, 1, 2) / 255
    assert judge_colours(images, list(PALETTE.values())).tolist() == list(range(len(PALETTE)))
    assert judge_colours(torch.zeros(1, 3, 8, 8), list(PALETTE.values())).tolist() == [-1]


def test_every_caption_word_is_one_token():
    tokenizer = word_tokenizer(["a"] + CLASS_WORDS + COLOURS, max_length=8)
    assert tokenizer.tokenize("a purple ankle boot") == ["a</w>", "purple</w>", "ankle</w>", "boot</w>"]
    ids = tokenizer("a red top", padding="max_length", max_length=8).input_ids
    assert len(ids) == 8 and ids[0] == tokenizer.bos_token_id and ids[4:] == [tokenizer.eos_token_id] * 4
    assert word_tokenizer(COLOURS[::-1] + ["a"] + CLASS_WORDS, max_length=8).get_vocab() == tokenizer.get_vocab()
