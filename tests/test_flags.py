"""Flags made from the config dataclasses (autellix/flags.py), and the dataclasses made back."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest

from autellix import cli
from autellix.engine.config import EngineConfig
from autellix.flags import add_flags, check_fields, engine_config, from_args
from autellix.server.frontend import ServeConfig
from autellix.server.launch import add_serve_flags


@dataclass
class Ladder:
    steps: int = field(default=3, metadata={"help": "steps"})

    def __call__(self) -> tuple:
        return tuple(float(i) for i in range(self.steps))


@dataclass
class Inner:
    edges: tuple[float, ...] = field(
        default_factory=lambda: Ladder()(), metadata={"help": "edges", "built_from": Ladder}
    )
    on: bool = field(default=False, metadata={"help": "on"})


@dataclass
class Outer:
    name: str = field(default="a", metadata={"help": "a name"})
    mode: Literal["x", "y"] = field(default="x", metadata={"help": "mode"})
    limit: int | None = field(default=None, metadata={"help": "limit"})
    size: int = field(default=2048, metadata={"flag": "--size-kib", "unit": 1024, "help": "kib"})
    keep: bool = field(default=True, metadata={"flag": "--drop", "negate": True, "help": "drop"})
    hidden: float = field(default=1.5, metadata={"flag": None})
    inner: Inner = field(default_factory=Inner)


def parse(*argv: str, cls: type = Outer, **kwargs) -> tuple[argparse.ArgumentParser, object]:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_flags(parser, cls, **kwargs)
    return parser, from_args(cls, parser.parse_args(argv))


def test_no_flags_give_the_defaults() -> None:
    assert parse()[1] == Outer()
    assert parse(cls=EngineConfig)[1] == EngineConfig()
    assert from_args(ServeConfig, cli.build_parser().parse_args(["serve"])) == ServeConfig()
    assert engine_config("") == EngineConfig()


def test_each_kind_of_field() -> None:
    _, got = parse("--name", "b", "--mode", "y", "--limit", "4", "--size-kib", "0.5", "--drop")
    assert (got.name, got.mode, got.limit, got.size, got.keep) == ("b", "y", 4, 512, False)
    _, got = parse("--no-drop", "--on", "--edges", "1", "2")
    assert got.keep and got.inner.on and got.inner.edges == (1.0, 2.0)
    assert parse("--steps", "2")[1].inner.edges == (0.0, 1.0)  # built from the ladder
    with pytest.raises(argparse.ArgumentError):
        parse("--mode", "z")
    with pytest.raises(SystemExit):  # no flag for a field marked flag None
        parse("--hidden", "2")


def test_sections_choices_and_skip() -> None:
    parser, got = parse(
        "--name", "q", sections=("inner",), choices={"name": ["p", "q"]}, skip=("limit",)
    )
    titles = [g.title for g in parser._action_groups]
    assert titles.index("inner") == 2  # made first, after argparse's own two
    assert got.name == "q" and "--limit" not in parser.format_help()
    with pytest.raises(argparse.ArgumentError):
        parse("--name", "r", choices={"name": ["p", "q"]})


def test_a_field_without_a_flag_type_is_refused() -> None:
    @dataclass
    class Bad:
        table: dict = field(default_factory=dict)

    with pytest.raises(TypeError, match="table"):
        parse(cls=Bad)


def test_every_serve_flag_has_help_from_its_field() -> None:
    for f in dataclasses.fields(ServeConfig):
        no_flag = f.name == "engine" or f.metadata.get("flag", "") is None
        assert no_flag or f.metadata.get("help"), f"ServeConfig.{f.name} has no help"
    assert ServeConfig.__dataclass_fields__["max_queued_per_replica"].metadata["flag"] == (
        "--max-waiting"  # the flag users' scripts pass, whatever the field is called
    )
    serve = argparse.ArgumentParser()
    add_serve_flags(serve)
    assert len(serve._actions) > 30
    for action in serve._actions:
        assert action.help, f"{action.option_strings} has no help"


def test_policy_choices_come_from_the_registry() -> None:
    args = cli.build_parser().parse_args(["serve", "--policy", "gittins"])
    assert args.policy == "gittins"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["serve", "--policy", "srpt"])  # clairvoyant
    assert engine_config("--policy srpt").policy == "srpt"  # the simulator's variants


def test_subcommands_get_their_flags_when_used(capsys) -> None:
    parser = cli.build_parser()  # imports nothing of the subcommands' own
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--help"])
    assert "--max-waiting" in capsys.readouterr().out
    assert cli.build_parser().parse_args(["profile", "--beta", "2"]).beta == 2


@dataclass
class Bounded:
    count: int = field(default=1, metadata={"help": "count", "min": 1})
    rate: float = field(default=1.0, metadata={"help": "rate", "above": 0})
    port: int = field(default=80, metadata={"help": "port", "min": 0, "max": 65535})
    size: int = field(default=1 << 20, metadata={"flag": "--size-mib", "unit": 1 << 20, "above": 0})
    mode: Literal["x", "y"] = field(default="x", metadata={"help": "mode"})
    hidden: int | None = field(default=None, metadata={"flag": None, "min": 2})

    def __post_init__(self) -> None:
        check_fields(self)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--count", "0"], "argument --count: must be at least 1, not 0"),
        (["--rate", "0"], "argument --rate: must be more than 0, not 0.0"),
        (["--rate", "nan"], "argument --rate: must be more than 0, not nan"),
        (["--port", "65536"], "argument --port: must be at most 65535, not 65536"),
        (["--port", "-1"], "argument --port: must be at least 0, not -1"),
        (["--size-mib", "0"], "argument --size-mib: must be more than 0.0, not 0.0"),
        (["--count", "1.5"], "argument --count: invalid int value: '1.5'"),
    ],
)
def test_a_flag_out_of_its_fields_bounds_is_refused_by_the_parser(
    flags: list[str], message: str
) -> None:
    with pytest.raises(argparse.ArgumentError) as e:
        parse(*flags, cls=Bounded)
    assert str(e.value) == message


def test_the_bounds_hold_at_their_edges() -> None:
    got = parse("--count", "1", "--rate", "1e-9", "--port", "65535", cls=Bounded)[1]
    assert (got.count, got.rate, got.port) == (1, 1e-9, 65535)
    assert parse("--port", "0", "--size-mib", "0.5", cls=Bounded)[1].size == 1 << 19


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"count": 0}, r"^count \(--count\) must be at least 1, not 0$"),
        ({"rate": -1.0}, r"^rate \(--rate\) must be more than 0, not -1.0$"),
        ({"port": 70000}, r"^port \(--port\) must be at most 65535, not 70000$"),
        ({"size": 0}, r"^size \(--size-mib\) must be more than 0, not 0$"),
        ({"mode": "z"}, r"^mode \(--mode\) must be one of 'x', 'y'$"),
        ({"hidden": 1}, r"^hidden must be at least 2, not 1$"),  # no flag to name
    ],
)
def test_a_config_out_of_its_fields_bounds_is_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Bounded(**fields)
    assert Bounded(hidden=None).hidden is None  # None: the default, never out of bounds


def test_a_default_is_shown_once() -> None:
    serve = argparse.ArgumentParser()
    add_serve_flags(serve)
    for action in serve._actions:
        if action.help is not None:
            text = action.help % {"default": action.default}
            assert text.count("(default:") <= 1, action.option_strings
            assert "(default: ())" not in text, action.option_strings
