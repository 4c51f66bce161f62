"""Files that are never half-written, and safetensors that never unpickle.

Every write goes through :func:`write_atomic`: a temporary file beside the target, fsynced,
renamed over it, and the rename itself made durable. A reader (or a crash) sees the old bytes
or all the new ones, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from revelio.errors import ArtifactFormatError


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None] | bytes) -> None:
    """Write ``path`` through a temporary file (``write(temporary)`` or the given bytes), then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(write, bytes):
        temporary.write_bytes(write)
    else:
        write(temporary)
    with open(temporary, "rb") as file:
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_atomic(path, text.encode())


def write_json(data: Any, path: str | os.PathLike) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file, or an :class:`ArtifactFormatError` naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactFormatError(f"{path} is not valid JSON ({err}).") from None


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    write_atomic(path, lambda temporary: save_file(tensors, str(temporary), metadata))


def holds(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> bool:
    """Whether the safetensors file at ``path`` already holds exactly ``tensors``: a stage that would
    write the same file again leaves it (and its modification time, which later stages' done-checks
    compare against) alone."""
    if not Path(path).is_file():
        return False
    try:
        found = read_safetensors(path)
    except ArtifactFormatError:
        return False
    return found.keys() == tensors.keys() and all(
        found[k].dtype == v.dtype and found[k].shape == v.shape and torch.equal(found[k], v.cpu()) for k, v in tensors.items())


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file; pickles and damaged files get a clear refusal."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise _unreadable(path, err) from None


def safetensors_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Each tensor's dtype ("F32", "BF16", ...) and shape, read from the header alone: a file's
    claims are checked before any of its tensors is allocated."""
    try:
        with safe_open(str(path), "pt") as file:
            return {name: (file.get_slice(name).get_dtype(), tuple(file.get_slice(name).get_shape())) for name in file.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise _unreadable(path, err) from None


def _unreadable(path: str | os.PathLike, err: Exception) -> ArtifactFormatError:
    with open(path, "rb") as file:
        head = file.read(2)
    if head[:1] == b"\x80" or head == b"PK":  # pickle protocol 2+ / torch.save's zip
        return ArtifactFormatError(
            f"{path} looks like a pickle / torch.save file. revelio never unpickles files; "
            "convert the weights to safetensors (safetensors.torch.save_file) in a trusted environment."
        )
    return ArtifactFormatError(
        f"{path} is not a valid safetensors file ({err}); it may be truncated or tampered "
        "with. Download or save it again."
    )


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata in a safetensors header (call after read_safetensors validated it)."""
    with safe_open(str(path), "pt") as file:
        return dict(file.metadata() or {})


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


STATE_KEY = "revelio.state"  # the safetensors metadata entry holding a state's structure


def write_state(state: Any, path: str | os.PathLike) -> None:
    """A nested training state (dicts, lists, tuples, numbers, strings, tensors) as one safetensors
    file: tensors as tensors, the structure as JSON in its header. Atomic, and never a pickle."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(state, tensors)
    # cloned: safetensors refuses tensors that share storage (views of one buffer)
    write_safetensors({k: v.clone() for k, v in tensors.items()}, path, {STATE_KEY: json.dumps(structure)})


def read_state(path: str | os.PathLike) -> Any:
    """The state :func:`write_state` wrote (dict keys, tuples and numbers come back as they were)."""
    tensors = read_safetensors(path)
    structure = read_safetensors_metadata(path).get(STATE_KEY)
    if structure is None:
        raise ArtifactFormatError(f"{path} holds tensors but no {STATE_KEY!r} entry; it was not written by write_state")
    return _decode(json.loads(structure), tensors)


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON for ``value``: every dict and tuple becomes a one-key marker object, every tensor a reference."""
    if isinstance(value, torch.Tensor):
        tensors[str(len(tensors))] = value
        return {"tensor": str(len(tensors) - 1)}
    if isinstance(value, dict):
        if not all(isinstance(k, (str, int)) for k in value):
            raise TypeError(f"state dict keys must be str or int; got {sorted(map(repr, value))[:3]}")
        return {"dict": [[k, _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a training state")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    (kind, content), = value.items()
    if kind == "tensor":
        return tensors[content]
    if kind == "tuple":
        return tuple(_decode(v, tensors) for v in content)
    return {k: _decode(v, tensors) for k, v in content}
