"""The base of every JSON schema: a dataclass that checks what it reads against its field types.

Nested schemas, lists and dicts of them, optional fields and plain JSON types are checked and
built recursively; unknown keys are ignored (a newer writer may add fields), missing required
ones and wrong types are an :class:`ArtifactFormatError` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from revelio.errors import ArtifactFormatError
from revelio.storage.files import write_json

Schema = TypeVar("Schema", bound="JsonSchema")
_PLAIN = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


class JsonSchema:
    """Mixin for dataclasses stored as JSON objects."""

    def to_json(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_json(cls: type[Schema], data: Any, where: str = "") -> Schema:
        """Build from parsed JSON, checking every field; ``where`` names the file in errors."""
        return _build(cls, data, where or cls.__name__, cls.__name__)

    @classmethod
    def read(cls: type[Schema], path: str | Path) -> Schema:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ArtifactFormatError(f"{path} is missing; the step that writes it has not run (or did not finish)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ArtifactFormatError(f"{path} is not valid JSON ({err}).") from None
        return cls.from_json(data, str(path))

    def write(self, path: str | Path) -> None:

        write_json(self.to_json(), path)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return value.as_posix()
    return value


def _build(kind: Any, data: Any, where: str, field: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _build(option, data, where, field)
            except ArtifactFormatError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if data not in args:
            raise ArtifactFormatError(f"{where}: {field} must be one of {list(args)}; found {data!r}")
        return data
    if origin is list or origin is tuple:
        if not isinstance(data, list):
            raise ArtifactFormatError(f"{where}: {field} must be a list; found {type(data).__name__}")
        item = args[0] if args else Any
        built = [_build(item, v, where, f"{field}[{i}]") for i, v in enumerate(data)]
        return tuple(built) if origin is tuple else built
    if origin is dict:
        if not isinstance(data, dict):
            raise ArtifactFormatError(f"{where}: {field} must be an object; found {type(data).__name__}")
        value_kind = args[1] if args else Any
        return {k: _build(value_kind, v, where, f"{field}.{k}") for k, v in data.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return _build_dataclass(kind, data, where, field)
    if kind is Path:
        return Path(_build(str, data, where, field))
    if kind in _PLAIN:
        if isinstance(data, bool) and kind is not bool or not isinstance(data, _PLAIN[kind]):
            raise ArtifactFormatError(f"{where}: {field} must be a {kind.__name__}; found {data!r}")
        return float(data) if kind is float else data
    raise TypeError(f"no JSON reading for {kind!r} ({field})")


def _build_dataclass(cls: type, data: Any, where: str, field: str) -> Any:
    if not isinstance(data, dict):
        raise ArtifactFormatError(f"{where}: {field} must be a JSON object; found {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in data:
            values[f.name] = _build(hints[f.name], data[f.name], where, f"{field}.{f.name}" if field != cls.__name__ else f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ArtifactFormatError(f"{where} lacks the field {f.name!r} ({cls.__name__}); rewrite it with the step that made it")
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ArtifactFormatError(f"{where}: {err}") from None
