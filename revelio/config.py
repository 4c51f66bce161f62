"""Typed configs: one dataclass per artifact, stored in that artifact's JSON, and the CLI made from it.

A config field is declared once, with its type, default and help (``option(...)``); the train/
scripts' flags are generated from the fields (``--field-name``, or ``flag=`` for a shorter name),
and the same object is written into the artifact it produced, so a release records exactly what
built it. No third-party CLI library: the mapping is a few lines over :mod:`dataclasses` and
:mod:`argparse`, and it never changes under us.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from revelio.errors import ConfigError, RevelioError

Config = TypeVar("Config")


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, cli: bool = True, **kwargs: Any) -> Any:
    """A config field with its help text; ``flag`` overrides the generated --name; ``cli=False`` keeps it off the CLI."""
    metadata = {"help": help, "flag": flag, "cli": cli}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return annotation, False


def add_arguments(parser: argparse.ArgumentParser, cls: type, exclude: tuple[str, ...] = ()) -> None:
    """One flag per CLI field of the dataclass ``cls``, typed, with its default in the help."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for field in dataclasses.fields(cls):
        if not field.metadata.get("cli", True) or field.name in exclude:
            continue
        kind, _ = _unwrap_optional(hints[field.name])
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        default = None if required else (field.default if field.default is not dataclasses.MISSING else field.default_factory())
        kwargs: dict[str, Any] = {"dest": field.name, "required": required, "default": default}
        help_text = field.metadata.get("help", "")
        kwargs["help"] = help_text + ("" if required or default in (None, False) else f" (default: {default})")
        if kind is bool:
            kwargs.pop("required")
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            kwargs.update(nargs="+", type=_scalar(item), **_choices(item))
        elif typing.get_origin(kind) is Literal:
            kwargs.update(choices=list(typing.get_args(kind)))
        else:
            kwargs["type"] = _scalar(kind)
        group.add_argument(_flag(field), **kwargs)


def _scalar(kind: Any) -> Any:
    if typing.get_origin(kind) is Literal:
        return type(typing.get_args(kind)[0])
    if kind in (int, float, str, Path):
        return kind
    raise TypeError(f"no command-line type for {kind!r}")


def _choices(kind: Any) -> dict[str, Any]:
    return {"choices": list(typing.get_args(kind))} if typing.get_origin(kind) is Literal else {}


def from_arguments(cls: type[Config], namespace: argparse.Namespace, **overrides: Any) -> Config:
    """The dataclass built from parsed flags (fields off the CLI keep their defaults)."""
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls) if hasattr(namespace, f.name)}
    return cls(**{**values, **overrides})


def parse(cls: type[Config], argv: list[str] | None = None, description: str | None = None) -> Config:
    """Parse ``argv`` into ``cls``: the whole CLI of a train/ script that takes one config."""
    return parse_many([cls], argv, description)[0]


def parse_many(classes: list[type], argv: list[str] | None = None, description: str | None = None) -> list[Any]:
    """Parse ``argv`` into one instance of each config class (their fields must not share names)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for cls in classes:
        add_arguments(parser, cls)
    namespace = parser.parse_args(argv)
    return [from_arguments(cls, namespace) for cls in classes]


def to_argv(*configs: Any) -> list[str]:
    """The flags that rebuild ``configs`` with :func:`parse_many`: required fields and those off their default."""
    argv: list[str] = []
    for config in configs:
        for field in dataclasses.fields(config):
            if not field.metadata.get("cli", True):
                continue
            value = getattr(config, field.name)
            default = field.default if field.default is not dataclasses.MISSING else (
                field.default_factory() if field.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
            if value == default or value is None:
                continue
            flag = _flag(field)
            if isinstance(value, bool):
                argv.append(flag if value else "--no-" + flag[2:])
            elif isinstance(value, (list, tuple)):
                argv += [flag, *map(str, value)]
            else:
                argv += [flag, str(value)]
    return argv


def to_json(config: Any) -> dict[str, Any]:
    """The config as JSON values (paths as strings), for the artifact it describes."""
    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return value.as_posix()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def from_json(cls: type[Config], data: dict[str, Any]) -> Config:
    """The inverse of :func:`to_json`; unknown keys are an error naming the known ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    values = {k: Path(v) if _unwrap_optional(hints[k])[0] is Path and v is not None else v for k, v in data.items()}
    return cls(**values)


def run_script(main: Callable[[], Any]) -> None:
    """A train/ script's entry point: progress and results logged to stdout, and anything revelio
    refuses (a :class:`~revelio.errors.RevelioError`) turned into a one-line exit message instead
    of a traceback. The one place the package exits the process."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    try:
        main()
    except RevelioError as err:
        raise SystemExit(f"error: {err}") from None
