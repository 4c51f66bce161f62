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

from revelio.errors import RevelioError

Config = TypeVar("Config")


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, cli: bool = True,
           positional: bool = False, **kwargs: Any) -> Any:
    """A config field with its help text; ``flag`` overrides the generated --name; ``cli=False`` keeps it off the CLI;
    ``positional`` makes a required field a positional argument (``convert_saes.py SOURCE OUT``)."""
    metadata = {"help": help, "flag": flag, "cli": cli, "positional": positional}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def group(factory: Callable[[], Any], prefix: str, derived: tuple[str, ...] = (), help: str = "") -> Any:
    """A field holding another step's whole config (a dataclass), e.g. a release build's SAE training.

    Each of its CLI fields gets a flag ``--<prefix>-<its flag>``, so an option added to the step's
    config is at once an option of every command that holds it. ``derived`` names the fields the
    holder fills in itself (paths, the model, the seed): they get no flag. ``factory`` gives the
    defaults, which may differ from the step's own.
    """
    return dataclasses.field(default_factory=factory, metadata={"group": True, "prefix": prefix, "derived": derived, "help": help})


def _is_group(field: dataclasses.Field) -> bool:
    return bool(field.metadata.get("group"))


def _flag(field: dataclasses.Field, prefix: str = "") -> str:
    name = (field.metadata.get("flag") or "--" + field.name.replace("_", "-"))[2:]
    return f"--{prefix}{name}"


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return annotation, False


def _cli_fields(cls: type, exclude: tuple[str, ...] = ()) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True) and f.name not in exclude]


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def add_arguments(parser: argparse.ArgumentParser, cls: type, exclude: tuple[str, ...] = (), *, prefix: str = "",
                  dest: str = "", defaults: Any = None) -> None:
    """One flag per CLI field of the dataclass ``cls``, typed, with its default in the help; a
    :func:`group` field adds its step's flags under its prefix."""
    hints = typing.get_type_hints(cls)
    argument_group = parser.add_argument_group(f"{cls.__name__}" + (f" (--{prefix}*)" if prefix else ""))
    for field in _cli_fields(cls, exclude):
        if _is_group(field):
            inner = field.metadata["prefix"]
            add_arguments(parser, hints[field.name], field.metadata["derived"], prefix=f"{prefix}{inner}-",
                          dest=f"{dest}{field.name}.", defaults=getattr(defaults, field.name) if defaults else field.default_factory())
            continue
        kind, _ = _unwrap_optional(hints[field.name])
        default = getattr(defaults, field.name) if defaults is not None else _default(field)
        required = default is dataclasses.MISSING
        default = None if required else default
        kwargs: dict[str, Any] = {"dest": dest + field.name, "required": required, "default": default}
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
        if dest and "choices" not in kwargs and kind is not bool:
            kwargs["metavar"] = field.name.upper()  # not the dotted dest
        if field.metadata.get("positional"):
            del kwargs["dest"], kwargs["required"], kwargs["default"]
            argument_group.add_argument(dest + field.name, metavar=field.name.upper(), **kwargs)
            continue
        argument_group.add_argument(_flag(field, prefix), **kwargs)


def _scalar(kind: Any) -> Any:
    if typing.get_origin(kind) is Literal:
        return type(typing.get_args(kind)[0])
    if kind in (int, float, str, Path):
        return kind
    raise TypeError(f"no command-line type for {kind!r}")


def _choices(kind: Any) -> dict[str, Any]:
    return {"choices": list(typing.get_args(kind))} if typing.get_origin(kind) is Literal else {}


def from_arguments(cls: type[Config], namespace: argparse.Namespace, *, dest: str = "", defaults: Any = None, **overrides: Any) -> Config:
    """The dataclass built from parsed flags (fields off the CLI keep their defaults; groups built from their flags)."""
    values = {}
    for field in dataclasses.fields(cls):
        if _is_group(field):
            inner_defaults = getattr(defaults, field.name) if defaults is not None else field.default_factory()
            values[field.name] = from_arguments(typing.get_type_hints(cls)[field.name], namespace, dest=f"{dest}{field.name}.",
                                                defaults=inner_defaults)
        elif hasattr(namespace, dest + field.name):
            values[field.name] = getattr(namespace, dest + field.name)
        elif defaults is not None:
            values[field.name] = getattr(defaults, field.name)
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
        argv += _argv(config, type(config), "", None)
    return argv


def _argv(config: Any, cls: type, prefix: str, defaults: Any, exclude: tuple[str, ...] = ()) -> list[str]:
    argv: list[str] = []
    leading: list[str] = []
    for field in _cli_fields(cls, exclude):
        value = getattr(config, field.name)
        if _is_group(field):
            inner_defaults = getattr(defaults, field.name) if defaults is not None else field.default_factory()
            argv += _argv(value, type(value), f"{prefix}{field.metadata['prefix']}-", inner_defaults, field.metadata["derived"])
            continue
        default = getattr(defaults, field.name) if defaults is not None else _default(field)
        if field.metadata.get("positional"):
            leading.append(str(value))  # before any flag, which might take several values
            continue
        if value == default or value is None:
            continue
        flag = _flag(field, prefix)
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return leading + argv


def to_json(config: Any) -> dict[str, Any]:
    """The config as JSON values (paths as strings, groups as objects), for the artifact it describes."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return to_json(value)
        if isinstance(value, Path):
            return value.as_posix()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def run_script(main: Callable[[], Any]) -> None:
    """A train/ script's entry point: progress and results logged to stdout, and anything revelio
    refuses (a :class:`~revelio.errors.RevelioError`) turned into a one-line exit message instead
    of a traceback. The one place the package exits the process."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    try:
        main()
    except RevelioError as err:
        raise SystemExit(f"error: {err}") from None
