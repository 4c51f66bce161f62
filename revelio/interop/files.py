"""Reading another project's SAE files as data: typed JSON fields, weights checked before loading.

Every check names the file and what is wrong: a config's sizes go through :class:`SAEConfig` (and
so :func:`check_sizes`) before any weight is read; a weights file's header (names, dtypes, shapes)
is compared with what that config implies before a tensor is allocated; the loaded tensors must
be finite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from revelio.artifact import ExtraFile
from revelio.errors import ArtifactFormatError
from revelio.formats.artifacts import SAEConfig
from revelio.storage.files import read_json, read_safetensors, safetensors_header

FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # upcast (or, for F64, rounded) to float32 on load
_REQUIRED = object()


@dataclass
class ForeignSAE:
    """An SAE read from another format, in revelio's terms: its config, and its weights as
    ``W_enc`` [d_sae, d_in], ``W_dec`` [d_sae, d_in], ``b_enc`` [d_sae], ``b_pre`` [d_in] (float32)."""

    config: SAEConfig
    tensors: dict[str, torch.Tensor]
    extra_files: dict[str, ExtraFile] = field(default_factory=dict)


def read_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold one object."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ArtifactFormatError(f"{path} must hold a JSON object; found {type(raw).__name__}")
    return raw


def value(raw: dict[str, Any], key: str, kind: type, path: Path, default: Any = _REQUIRED) -> Any:
    """``raw[key]`` of type ``kind`` (an int is not a bool, a bool not an int), or ``default``."""
    if key not in raw or (raw[key] is None and default is not _REQUIRED):
        if default is _REQUIRED:
            raise ArtifactFormatError(f"{path} has no {key!r}; it is not a complete config of this format")
        return default
    found = raw[key]
    if not isinstance(found, kind) or (kind is int and isinstance(found, bool)):
        raise ArtifactFormatError(f"{path}: {key!r} must be a {kind.__name__}; found {found!r:.60}")
    return found


def sae_config(path: Path, **fields: Any) -> SAEConfig:
    """The SAEConfig a foreign config describes; impossible or absurd sizes are refused here,
    before any weight is read."""
    try:
        return SAEConfig(**fields)
    except ValueError as err:
        raise ArtifactFormatError(f"{path}: {err}") from None


def load_weights(path: Path, expected: dict[str, tuple[int, ...]], optional: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file as float32, after its header showed exactly the
    ``expected`` names and shapes (plus any ``optional`` ones) in a floating dtype."""
    optional = optional or {}
    header = safetensors_header(path)
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected) - set(optional))
    if missing or unexpected:
        raise ArtifactFormatError(f"{path} does not hold this format's tensors: missing {missing}, unexpected {unexpected}")
    wanted = {**expected, **optional}
    for name, (dtype, shape) in header.items():
        if shape != wanted[name]:
            raise ArtifactFormatError(f"{path}: {name} has shape {list(shape)}; its config implies {list(wanted[name])}")
        if dtype not in FLOAT_DTYPES:
            raise ArtifactFormatError(f"{path}: {name} is {dtype}; SAE weights must be one of {list(FLOAT_DTYPES)}")
    return finite(path, {name: t.float() for name, t in read_safetensors(path).items()})


def finite(path: Path | str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` when every value is finite; NaN or infinite weights name the file and tensor."""
    for name, tensor in tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            raise ArtifactFormatError(f"{path}: {name} holds NaN or infinite values; the weights are damaged")
    return tensors


def check_shapes(path: Path | str, tensors: dict[str, Any], expected: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Unpickled weights: exactly the ``expected`` floating tensors with their shapes, as finite float32."""
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ArtifactFormatError(f"{path} lacks the tensors {missing}; found {sorted(tensors)[:20]}")
    out = {}
    for name, shape in expected.items():
        tensor = tensors[name]
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise ArtifactFormatError(f"{path}: {name} must be a floating-point tensor; found {type(tensor).__name__}")
        if tuple(tensor.shape) != shape:
            raise ArtifactFormatError(f"{path}: {name} has shape {list(tensor.shape)}; its config implies {list(shape)}")
        out[name] = tensor.detach().float().contiguous()
    return finite(path, out)
