"""The pickled SAE formats (SDXL-unbox folders, the paper's .pt files), found and read once for
conversion into revelio's format (``train/convert_saes.py``), never while loading."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import revelio.interop.paper as paper
import revelio.interop.sdxl_unbox as sdxl_unbox
from revelio.errors import ArtifactFormatError
from revelio.formats.artifacts import SAESource
from revelio.interop.files import ForeignSAE
from revelio.storage.resolve import contained, resolve_folder


def pickled_saes(source: str | Path, revision: str | None = None, license: str = "") -> Iterator[tuple[str, ForeignSAE]]:
    """Each SAE under ``source`` (a local folder or .pt file, or a Hub repo id) with its path
    relative to ``source`` ("" for a single file or block): SDXL-unbox block folders, else the
    paper's .pt files."""
    root = Path(source) if Path(source).exists() else resolve_folder(source, revision, what="folder or .pt file")
    if root.is_file():
        yield "", paper.convert(root, SAESource("paper", str(source), "", license))
        return
    blocks = sorted({path.parent for path in root.rglob(sdxl_unbox.WEIGHTS) if sdxl_unbox.is_block(contained(path, root).parent)})
    files = [] if blocks else sorted(contained(path, root) for path in root.rglob("*.pt"))
    if not blocks and not files:
        raise ArtifactFormatError(f"{root} holds no SDXL-unbox folder (config.json + {sdxl_unbox.WEIGHTS}) and no .pt file")
    for folder in blocks:
        relative = "" if folder == root else folder.relative_to(root).as_posix()
        yield relative, sdxl_unbox.convert(folder, SAESource("sdxl-unbox", str(source), relative, license, reads="residual update"))
    for path in files:
        relative = path.relative_to(root).with_suffix("").as_posix()
        yield relative, paper.convert(path, SAESource("paper", str(source), path.relative_to(root).as_posix(), license))
