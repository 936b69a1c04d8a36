"""Command-line flags made from the config dataclasses, and the dataclasses made back.

A field's flag is `--` and its name with dashes. Its type gives the flag's form: a bool is
`--x/--no-x`, a Literal gives the choices, `X | None` is an X flag whose default is None,
`tuple[X, ...]` takes one or more values, and a nested dataclass is a section of its own.
The field's metadata adds the rest:

- help: the help text (the default is shown after it)
- flag: another name for the flag, or None for a setting without one
- negate: the flag says the opposite of the field (--evict-preempted sets keep_preempted off)
- unit: the flag is in units of this many of the field's (--kv-cache-gib for bytes)
- built_from: a dataclass of settings that builds the field when its flag is not given; an
  instance is called (the queue boundaries from --num-queues, --first-boundary, ...)
- group: the help section, if not the dataclass's own
- metavar: as argparse's
- min, above, max: the bounds of a number (at least, more than, at most), in the field's
  units: argparse checks the flag's value, `check_fields` (in the dataclass's
  __post_init__) the field's
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any


def add_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    section: str | None = None,
    sections: Sequence[str] = (),
    choices: Mapping[str, Sequence[str]] | None = None,
    skip: Sequence[str] = (),
) -> None:
    """A flag for every field of dataclass `cls` that has one, under the help section
    `section` (None: the parser's options). `sections` are made first, in that order;
    `choices` give a str field its choices (by field name, nested fields too); `skip`
    leaves fields out. Everything else about a flag is in its field's metadata."""
    groups: dict[str | None, Any] = {None: parser}
    groups.update((title, parser.add_argument_group(title)) for title in sections)
    _add(parser, groups, cls, section, dict(choices or {}), set(skip))


def _add(parser, groups, cls, section, choices, skip) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.name in skip or meta.get("flag", "") is None:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            _add(parser, groups, hints[f.name], f.name, choices, skip)
            continue
        where = meta.get("group", section)
        if where not in groups:
            groups[where] = parser.add_argument_group(where)
        if "built_from" in meta:
            _add(parser, groups, meta["built_from"], where, choices, skip)
        groups[where].add_argument(_flag(f, meta), **_kwargs(f, hints[f.name], meta, choices))


def _flag(f: dataclasses.Field, meta: Mapping[str, Any]) -> str:
    return meta.get("flag") or "--" + f.name.replace("_", "-")


def flag_name(f: dataclasses.Field) -> str:
    """The command-line flag of a config field."""
    return _flag(f, f.metadata)


def _dest(f: dataclasses.Field, meta: Mapping[str, Any]) -> str:
    return _flag(f, meta).removeprefix("--").replace("-", "_")


def _kwargs(f, hint, meta, choices) -> dict[str, Any]:
    """argparse's keywords for one field."""
    default = None if "built_from" in meta else _default(f)
    kwargs: dict[str, Any] = {"dest": _dest(f, meta), "help": meta.get("help")}
    hint = _unwrap_optional(hint)
    if hint is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
        kwargs["default"] = not default if meta.get("negate") else default
        return _show_default(kwargs)
    if "unit" in meta:
        hint, default = float, default / meta["unit"]
    if typing.get_origin(hint) is tuple:
        kwargs["nargs"], hint = "+", typing.get_args(hint)[0]
    if typing.get_origin(hint) is typing.Literal:
        kwargs["choices"], hint = list(typing.get_args(hint)), str
    if f.name in choices:
        kwargs["choices"] = list(choices[f.name])
    if hint not in (int, float, str):
        raise TypeError(f"{f.name}: no flag for {hint}; give it metadata {{'flag': None}}")
    bounds = {k: meta[k] for k in ("min", "above", "max") if k in meta}
    if "unit" in meta:
        bounds = {k: v / meta["unit"] for k, v in bounds.items()}
    kwargs.update(type=number(hint, **bounds) if bounds else hint, default=default)
    if "metavar" in meta:
        kwargs["metavar"] = meta["metavar"]
    return _show_default(kwargs)


def _show_default(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The default after the help, unless the help says it (a default of None or () must
    be said there: what the setting does when not given)."""
    help, default = kwargs["help"], kwargs["default"]
    if help is not None and "(default:" not in help and default not in (None, ()):
        kwargs["help"] += " (default: %(default)s)"
    return kwargs


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _unwrap_optional(hint: Any) -> Any:
    """X for X | None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return inner
    return hint


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """The dataclass `cls` from parsed flags (`add_flags`); a field whose flag the parser
    did not have keeps its default."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get("flag", "") is None:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            values[f.name] = from_args(hints[f.name], args)
        elif hasattr(args, _dest(f, meta)):
            values[f.name] = _value(getattr(args, _dest(f, meta)), meta, args)
    return cls(**values)


def given_flags(add: Callable[[argparse.ArgumentParser], None], argv: Sequence[str]) -> set[str]:
    """Of the flags `add` puts on a parser, those `argv` gives, even at their default
    values: the fields' flag names (as `flag_name`)."""
    parser = argparse.ArgumentParser(add_help=False)
    add(parser)
    for action in parser._actions:
        action.default = argparse.SUPPRESS  # left out of the namespace unless given
    options = {a.dest for a in parser._actions if a.option_strings}  # not positionals
    given, _ = parser.parse_known_args(argv)
    return {"--" + dest.replace("_", "-") for dest in vars(given) if dest in options}


def changed_or_given(
    config: Any, default: Any, given: AbstractSet[str], skip: AbstractSet[str] = frozenset()
) -> list[str]:
    """The flags of the fields of `config` (nested ones too; `skip`: top-level fields to
    leave out) that differ from `default`'s or that `given` holds."""
    out = []
    for f in dataclasses.fields(config):
        if f.name in skip:
            continue
        value, default_value = getattr(config, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            out += changed_or_given(value, default_value, given)
        elif f.metadata.get("flag", "") is not None:
            flag = flag_name(f)
            if value != default_value or flag in given:
                out.append(flag)
    return out


def _value(value: Any, meta: Mapping[str, Any], args: argparse.Namespace) -> Any:
    if value is None and "built_from" in meta:
        return from_args(meta["built_from"], args)()
    if meta.get("negate"):
        return not value
    if "unit" in meta:
        return int(value * meta["unit"])
    return tuple(value) if isinstance(value, list) else value


def check_fields(config: Any) -> None:
    """Raise ValueError where a field of dataclass `config` is out of its bounds (metadata
    min, above, max) or not among its Literal's values; None passes (the default)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, meta = getattr(config, f.name), f.metadata
        if value is None:
            continue
        name = f.name if meta.get("flag", "") is None else f"{f.name} ({flag_name(f)})"
        hint = _unwrap_optional(hints[f.name])
        if typing.get_origin(hint) is typing.Literal and value not in typing.get_args(hint):
            allowed = ", ".join(map(repr, typing.get_args(hint)))
            raise ValueError(f"{name} must be one of {allowed}")
        if wrong := out_of_bounds(value, meta):
            raise ValueError(f"{name} {wrong}")


def out_of_bounds(value: float, bounds: Mapping[str, float]) -> str | None:
    """What is wrong with `value` under `bounds` (min, above, max), or None (NaN is
    never within bounds)."""
    low, above, high = bounds.get("min"), bounds.get("above"), bounds.get("max")
    if low is not None and not value >= low:
        return f"must be at least {low}, not {value}"
    if above is not None and not value > above:
        return f"must be more than {above}, not {value}"
    if high is not None and not value <= high:
        return f"must be at most {high}, not {value}"
    return None


def number(kind: type, **bounds: float) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` (int or float) within `bounds` (min, above,
    max), else argparse's one-line error naming the flag."""

    def parse(text: str) -> Any:
        value = kind(text)  # a ValueError: argparse's "invalid int value"
        if wrong := out_of_bounds(value, bounds):
            raise argparse.ArgumentTypeError(wrong)
        return value

    parse.__name__ = kind.__name__
    return parse


# --- the engine's flags ------------------------------------------------------------------

ENGINE_SECTIONS = ("scheduling", "engine")  # in --help, scheduling first


def engine_choices(simulation: bool = False) -> dict[str, list[str]]:
    """The policies a flag may name: srpt is clairvoyant, for the simulator only."""
    from autellix.scheduling import POLICIES

    return {"policy": [p for p in POLICIES if simulation or p != "srpt"]}


def add_engine_flags(
    parser: argparse.ArgumentParser, simulation: bool = False, skip: Sequence[str] = ()
) -> None:
    """EngineConfig's flags (scheduling and engine), as `serve` and `profile` take them."""
    from autellix.engine.config import EngineConfig

    add_flags(
        parser,
        EngineConfig,
        section="engine",
        sections=ENGINE_SECTIONS,
        choices=engine_choices(simulation),
        skip=skip,
    )


def engine_config(flags: str):
    """EngineConfig from a string of engine flags, as `autellix serve` takes them (without
    --model)."""
    from autellix.engine.config import EngineConfig

    parser = argparse.ArgumentParser(prog="engine flags", add_help=False, exit_on_error=False)
    add_engine_flags(parser, simulation=True, skip=("model",))
    try:
        args, unknown = parser.parse_known_args(shlex.split(flags))
    except argparse.ArgumentError as exc:
        raise ValueError(f"engine flags: {exc}") from None
    if unknown:
        raise ValueError(f"unknown engine flags: {' '.join(unknown)}")
    return from_args(EngineConfig, args)


def baseline_of(names: Sequence[str], given: str | None, default: str) -> str:
    """What ratios are against, among variant or endpoint `names` (each must be named
    once): --baseline `given`, which must be one of them, or else `default` where it is
    one, else the first."""
    if twice := sorted({n for n in names if list(names).count(n) > 1}):
        raise ValueError(f"two variants or endpoints are named {twice[0]!r}: name each apart")
    if given is None:
        return default if default in names else names[0]
    if given not in names:
        raise ValueError(f"--baseline {given!r} is none of {', '.join(names)}")
    return given


def variant(item: str) -> tuple[str, str, str]:
    """An engine variant, NAME=POLICY:FLAGS (or POLICY, or POLICY:FLAGS) -> (name, policy,
    extra flags)."""
    head, _, extra = item.partition(":")
    name, _, policy = head.rpartition("=")
    return name or policy, policy, extra
