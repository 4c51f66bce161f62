"""What a dataset or a model is made of, as a short hash, so a rerun can tell when its inputs changed.

Local folders are fingerprinted by every file's relative path, size and modification time (moving
an image to another class folder, adding or editing one all change it; reading the bytes of a
large dataset would cost as much as the step it guards); Fashion-MNIST by its Debian files;
a Hub id by the id and revision asked for (the Hub pins what that resolves to).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from revelio.bundled import bundled_model_dir, is_bundled
from revelio.data.datasets import FASHION_MNIST, FASHION_MNIST_DIR


def fingerprint(name: str | Path, revision: str | None = None) -> str:
    """A 16-hex-digit hash of what ``name`` (a folder, "fashion-mnist", "bundled" or a Hub id) holds."""
    folder = _local_folder(str(name))
    digest = hashlib.sha256()
    if folder is None:
        digest.update(f"hub:{name}@{revision or 'main'}".encode())
        return digest.hexdigest()[:16]
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts[len(folder.parts):])):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _local_folder(name: str) -> Path | None:
    if name == FASHION_MNIST:
        return FASHION_MNIST_DIR if FASHION_MNIST_DIR.is_dir() else None
    if is_bundled(name):
        return bundled_model_dir(name)
    return Path(name) if Path(name).is_dir() else None
