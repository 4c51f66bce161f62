"""Every Python example in the README that needs nothing from the Hub or a GPU runs as written."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from revelio.bundled import BUNDLED_RELEASES
from tests.helpers import ROOT

pytestmark = pytest.mark.slow  # each example starts a fresh interpreter and loads the bundled model
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
LOADED = re.compile(r"(?:load_release|load_backbone|from_pretrained)\(\s*\"([^\"]+)\"")


def _offline(code: str) -> bool:
    """Loads only the bundled releases or models, and asks for no GPU and no upload."""
    return all(name in BUNDLED_RELEASES for name in LOADED.findall(code)) and not re.search(r"cuda|push_to_hub", code)


BLOCKS = BLOCK.findall((ROOT / "README.md").read_text())


def test_the_readme_has_offline_examples():
    assert sum(map(_offline, BLOCKS)) >= 3, "the quick start, the text default's and the steering example run offline"


@pytest.mark.parametrize("code", [b for b in BLOCKS if _offline(b)], ids=lambda code: code.splitlines()[2][:40])
def test_a_readme_example_runs_as_written(code, tmp_path):
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
