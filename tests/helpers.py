"""Helpers several test modules share (not a test module: test modules never import each other)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"


def run(*command: str, **env: str) -> subprocess.CompletedProcess:
    """Run a command in the repository root (extra environment variables as keywords); it must succeed."""
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env}, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


# images on the page that came from the app (Gradio's /file= URLs), loaded and visible
SHOWN_IMAGES = "() => [...document.images].filter(e => e.naturalWidth > 0 && e.offsetParent && e.src.includes('/file=')).length"


def generate_and_wait(page, timeout_ms: int) -> None:
    """Press Steer's Generate and wait until both new images (baseline and steered) are on the page."""
    before = page.evaluate(SHOWN_IMAGES)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function(f"({SHOWN_IMAGES})() >= {before + 2}", timeout=timeout_ms)
