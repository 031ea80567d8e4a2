"""The console script's options: flags made from the run spec's and the settings' fields, and the typed objects
built from the flags given and the environment, once, with one clear error for whatever is wrong.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from maddpg.errors import UserError
from maddpg.runspec import RunSpec, format_validation_error


# ---------------------------------------------------------------- run spec
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_kv(text: str) -> tuple[str, int | float | bool]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    low = raw.strip().lower()
    if low in ("true", "false"):
        return key.strip(), low == "true"
    for cast in (int, float):
        try:
            return key.strip(), cast(raw)
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"{key}: value {raw!r} is not a number or true/false")


def _argparse_kwargs(annotation: Any) -> dict:
    """How argparse reads a field of this type: a choice, a switch or a typed value."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(annotation) is typing.Literal:
        return {"choices": list(typing.get_args(annotation))}
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return {"type": args[0]}
    return {"type": annotation}


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunSpec field, its help taken from the field's description and default."""
    group = parser.add_argument_group("run spec (defaults are openai/maddpg's)")
    group.add_argument("--spec", type=Path, default=argparse.SUPPRESS, metavar="FILE",
                       help="a run spec as JSON (or the JSON text itself in env MADDPG_RUN_SPEC, as Kubernetes "
                            "pods get it); flags given here override its fields")
    for name, field in RunSpec.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if name == "env_kwargs":
            group.add_argument("--env-kwarg", action="append", type=_parse_kv, metavar="KEY=VALUE",
                               default=argparse.SUPPRESS, dest=name, help=field.description)
            continue
        kwargs = {"default": argparse.SUPPRESS, "help": f"{field.description} (default: {default})", "dest": name,
                  **_argparse_kwargs(field.annotation)}
        if name == "scenario":
            kwargs["metavar"] = "NAME"
        group.add_argument(_flag(name), **kwargs)


def spec_from_args(ns: argparse.Namespace, stored: dict | None = None) -> RunSpec:
    """The run spec from --spec FILE, else `stored` (the settings' MADDPG_RUN_SPEC), and the spec flags given.

    Raises:
      UserError: the file cannot be read, or a field is invalid (named).
    """
    data: dict = dict(stored or {})
    if getattr(ns, "spec", None) is not None:
        try:
            data = json.loads(Path(ns.spec).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"--spec {ns.spec}: cannot read a JSON run spec: {e}") from None
        if not isinstance(data, dict):
            raise UserError(f"--spec {ns.spec}: a run spec is a JSON object of its fields")
    for name in RunSpec.model_fields:
        if hasattr(ns, name):
            value = getattr(ns, name)
            data[name] = dict(value) if name == "env_kwargs" else value
    try:
        return RunSpec.model_validate(data)
    except ValidationError as e:
        raise UserError("invalid run spec:\n  " + format_validation_error(e).replace("\n", "\n  ")) from None


# ---------------------------------------------------------------- settings
_DEST = "setting:"  # the dest of a setting's flag: "setting:section.name", or "setting:name" at the top level


def _sections(cls: type[BaseSettings]) -> set[str]:
    return {name for name, field in cls.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}


def _field(cls: type[BaseSettings], key: str) -> FieldInfo:
    section, _, name = key.rpartition(".")
    owner = cls.model_fields[section].annotation if section else cls
    return owner.model_fields[name]


def _extra(field: FieldInfo) -> dict:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def env_name(cls: type[BaseSettings], key: str) -> str:
    """The environment variable of setting `key` ("section.name" or "name") of `cls`."""
    field = _field(cls, key)
    if "env" in _extra(field):
        return _extra(field)["env"]
    alias = field.validation_alias
    if alias is not None:  # a name of its own (REDIS_URL); of AliasChoices, the first is the documented one
        return alias if isinstance(alias, str) else str(alias.choices[0])
    return f"{cls.model_config.get('env_prefix', '')}{key.upper()}"


def add_setting_flags(parser: argparse.ArgumentParser, cls: type[BaseSettings], keys: list[str]) -> None:
    """A flag for each setting in `keys`, named by its field, with its variable and default in the help."""
    for key in keys:
        field = _field(cls, key)
        default = "" if field.default_factory or field.default is None else f"; default {field.default}"
        flag, kwargs = _extra(field)["flag"], _argparse_kwargs(field.annotation)
        if "choices" not in kwargs:
            kwargs["metavar"] = flag.lstrip("-").upper().replace("-", "_")
        parser.add_argument(flag, dest=_DEST + key, default=argparse.SUPPRESS,
                            help=f"{field.description} (env {env_name(cls, key)}{default})", **kwargs)


def flag_settings(ns: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, by key ("section.name" or "name")."""
    return {k.removeprefix(_DEST): v for k, v in vars(ns).items() if k.startswith(_DEST)}


def load_settings(cls: type[BaseSettings], given: dict[str, Any]) -> BaseSettings:
    """`cls` from the environment, the settings in `given` (by key: the flags given) winning.

    Raises:
      UserError: one line naming each bad setting, by its flag when given, else its variable, and what it expects.
    """
    nested: dict[str, Any] = {}
    for key, value in given.items():
        section, _, name = key.rpartition(".")
        (nested.setdefault(section, {}) if section else nested)[name] = value
    try:
        return cls(**nested)
    except ValidationError as e:
        raise UserError("; ".join(_problem(cls, item, given) for item in e.errors())) from None


def _problem(cls: type[BaseSettings], item: dict, given: dict[str, Any]) -> str:
    """One validation error as "NAME: what it expects", NAME the flag or variable of the setting."""
    loc = [str(part) for part in item["loc"]]
    message = item["msg"].removeprefix("Value error, ")
    if not loc:
        return message  # a rule across settings: its message names them
    depth = 2 if loc[0] in _sections(cls) and len(loc) > 1 else 1
    key = ".".join(loc[:depth])
    if key not in cls.model_fields and depth == 1:  # an alias (REDIS_URL): pydantic names the field so
        key = next((name for name, field in cls.model_fields.items() if field.validation_alias is not None
                    and key in _aliases(field)), key)
    try:
        name = _extra(_field(cls, key)).get("flag") if key in given else env_name(cls, key)
    except KeyError:  # not a setting of cls: say where pydantic found the problem
        name = key
    inner = ".".join(loc[depth:])
    return f"{name}{'[' + inner + ']' if inner else ''}: {message}"


def _aliases(field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    return [alias] if isinstance(alias, str) else [str(a) for a in getattr(alias, "choices", [])]
