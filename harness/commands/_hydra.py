"""The one command line of the commands that compose a config: train, sweep, plan, extrapolate, commbench.

    harness <command> [FLAGS] [KEY=VALUE | GROUP=OPTION ...]

Positional arguments are Hydra overrides on the command's typed config (``harness.core.config``,
``harness.core.config_jobs``), checked by ``harness.core.compose``. A flag that stands for a
config key (``harness train --timeout 60`` for ``launcher.timeout_s=60``) is turned into that
override, converted by the key's type and appended after the positional ones; the other flags
are the command's own (``--dry-run``). Every such command also takes ``--cfg job`` (print the
composed config, exit 0) and ``-h/--help`` (flags, config groups with their options, and every
key with its type and default, generated from the schema). Refused with exit 2 and one line:
an unknown flag, ``--multirun``/``-m`` (sweeps are ``harness sweep``), whatever compose refuses,
and the errors a command declares as its users' (``Command(errors=...)``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.core import compose as K
from harness.core import config as C
from harness.core.config_jobs import ROOTS

WIDTH = 100


class UsageError(Exception):
    """A command line that is refused; printed as one line, exit 2."""


@dataclass(frozen=True)
class Flag:
    """One flag of a command: either a config key's shorthand (``key``) or the command's own."""

    name: str  # "--timeout"
    help: str
    key: str | None = None  # the config key it sets (an override); None: the command's own flag
    switch: bool = False  # takes no value: sets True
    convert: Callable[[str], Any] | None = None  # text -> the key's value; default: by the key's type
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    default: Any = None  # own flags only (a keyed flag's default is the config's)

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


@dataclass
class Invocation:
    """What a command's body gets: the composed config and its own flags."""

    cfg: DictConfig
    args: argparse.Namespace  # the command's own flags (not the keyed ones: those are in cfg)
    positional: list[str]  # the KEY=VALUE arguments as given
    overrides: list[str]  # what was composed: the positional ones, then the keyed flags'
    argv: list[str]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


class Command:
    """The front end of one command: ``Command(...).main(argv, body)`` parses, composes and runs body.

    ``compose(overrides)`` replaces the plain ``C.compose(overrides, config)`` where a command
    composes in steps (sweep). ``fixed`` names groups used whole (their keys cannot be set).
    """

    def __init__(
        self,
        name: str,
        summary: str,
        *,
        config: str = "config",
        flags: Sequence[Flag] = (),
        errors: tuple[type[BaseException], ...] = (),
        compose: Callable[[list[str]], DictConfig] | None = None,
        fixed: Sequence[str] = (),
        epilog: str = "",
    ) -> None:
        self.name, self.summary, self.config = name, summary, config
        self.flags, self.errors, self.fixed, self.epilog = list(flags), errors, tuple(fixed), epilog
        self._compose = compose or (lambda overrides: C.compose(overrides, config))

    @property
    def prog(self) -> str:
        return f"harness {self.name}"

    # ----------------------------------------------------------------------- running

    def main(self, argv: list[str], body: Callable[[Invocation], int]) -> int:
        refused = (UsageError, K.OverrideError, C.ConfigError, HydraException, OmegaConfBaseException)
        try:
            inv = self.parse(argv)
            return inv if isinstance(inv, int) else int(body(inv) or 0)
        except (*refused, *self.errors) as e:  # type: ignore[misc]  # a tuple of exception classes
            print(f"{self.prog}: {self.one_line(e)}", file=sys.stderr)
            return 2

    @staticmethod
    def one_line(e: BaseException) -> str:
        if isinstance(e, HydraException | OmegaConfBaseException):
            return K.one_line(e, lambda key: f"unknown key {key!r}", C.available)
        return "; ".join(ln.strip() for ln in str(e).splitlines() if ln.strip()) or type(e).__name__

    def parse(self, argv: list[str]) -> Invocation | int:
        """The invocation, or the exit status when --help or --cfg job answered already."""
        multi = [a for a in argv if a in ("-m", "--multirun") or a.startswith("--multirun=")]
        if multi:
            raise UsageError(
                f"{multi[0]} is refused: {self.prog} runs one config; several runs are a sweep: "
                "harness sweep sweep=<name> (see harness sweep --help)"
            )
        ns = self._parser().parse_intermixed_args(argv)
        if ns.help:
            print(self.help())
            return 0
        positional = list(ns.overrides)
        overrides = positional + [
            self._override(f, getattr(ns, f.dest))
            for f in self.flags
            if f.key is not None and getattr(ns, f.dest) is not None
        ]
        fixed = [o for o in positional if K.key_of(o).split(".")[0] in self.fixed and "." in K.key_of(o)]
        if fixed:
            groups = ", ".join(f"{g}=<preset>" for g in self.fixed)
            raise UsageError(
                f"{fixed[0]!r} is refused: {self.prog} uses its presets whole; allowed: {groups}"
            )
        cfg = self._compose(overrides)
        if ns.cfg:
            print(OmegaConf.to_yaml(cfg, resolve=True), end="")
            return 0
        own = {f.dest: getattr(ns, f.dest) for f in self.flags if f.key is None}
        return Invocation(cfg, argparse.Namespace(**own), positional, overrides, list(argv))

    def _parser(self) -> _Parser:
        p = _Parser(prog=self.prog, add_help=False, allow_abbrev=False)
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
        for f in self.flags:
            if f.switch:
                p.add_argument(f.name, dest=f.dest, action="store_const", const=True, default=None)
            elif f.key is None:  # the command's own: argparse converts it
                kind = f.convert or str
                p.add_argument(
                    f.name, dest=f.dest, metavar=f.metavar, choices=f.choices, default=f.default, type=kind
                )
            else:  # a key's: converted by _override, by the key's type
                p.add_argument(f.name, dest=f.dest, metavar=f.metavar, choices=f.choices, default=None)
        p.add_argument("--cfg", choices=("job",), default=None)
        p.add_argument("-h", "--help", action="store_true")
        return p

    def _override(self, flag: Flag, text: Any) -> str:
        assert flag.key is not None
        if flag.switch:
            return f"{flag.key}=true"
        hint = key_hint(ROOTS[self.config], flag.key)
        try:
            value = flag.convert(text) if flag.convert else convert(text, hint)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as e:
            why = str(e) if flag.convert else f"expected {K.type_name(hint)}"
            raise UsageError(f"{flag.name} {text!r} is not allowed: {why}") from None
        return f"{flag.key}={literal(value)}"

    # ----------------------------------------------------------------------- help

    def help(self) -> str:
        width = max([len(f.name) + len(f.metavar or "X") + 1 for f in self.flags] + [12])
        lines = [
            f"usage: {self.prog} [FLAGS] [KEY=VALUE | GROUP=OPTION ...]",
            "",
            self.summary,
            "",
            "flags:",
        ]
        for f in self.flags:
            left = f.name if f.switch else f"{f.name} {f.metavar or f.dest.upper()}"
            choices = f" (one of: {', '.join(f.choices)})" if f.choices else ""
            text = f.help + choices + (f" (sets {f.key})" if f.key else "")
            lines += _wrap(f"  {left:<{width}}  {text}", 4 + width)
        lines += _wrap(f"  {'--cfg job':<{width}}  print the composed config and exit", 4 + width)
        lines += _wrap(f"  {'-h, --help':<{width}}  this help", 4 + width)
        lines += [
            "",
            "KEY=VALUE sets a config key, GROUP=OPTION picks a preset (Hydra override syntax; a key the",
            "config lacks, +/++ on a group, hydra.* / hydra/* and sweeps like model=a,b are refused).",
        ]
        lines += describe(self.config, self.fixed)
        return "\n".join([*lines, *([""] + self.epilog.splitlines() if self.epilog else [])])


# --------------------------------------------------------------------------- types and values


def key_hint(root: type, key: str) -> Any:
    """The type hint of a dotted key (a launcher key: the fields every launcher has)."""
    cls: Any = root
    hint: Any = None
    for part in key.split("."):
        hint = K.fields_of(cls)[part]
        if hint is Any:
            hint = C.LauncherConfig
        cls = hint if dataclasses.is_dataclass(hint) else None
    return str if dataclasses.is_dataclass(hint) else hint  # a group: the preset's name


def convert(text: str, hint: Any) -> Any:
    """A flag's text as a value of the key's type; ValueError when it is not one."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in ("null", "none"):
            return None
        return convert(text, next(a for a in args if a is not type(None)))
    if typing.get_origin(hint) is list:
        return [convert(x.strip(), args[0]) for x in text.split(",") if x.strip()]
    if hint is bool:
        low = text.strip().lower()
        if low not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(text)
        return low in ("true", "1", "yes")
    if hint is int:
        f = float(text)
        if not f.is_integer():
            raise ValueError(text)
        return int(text) if re.fullmatch(r"\s*[-+]?\d+\s*", text) else int(f)
    if hint is float:
        return float(text)
    return text


def literal(value: Any) -> str:
    """A value as Hydra override text (strings quoted, so any path or text passes as it is)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(literal(v) for v in value) + "]"
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, str(value))
    return "'" + text.replace("'", "\\'") + "'"


def show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, str):
        return value if value and value.strip() == value and value[0] not in "[{'\"" else repr(value)
    return str(value)


def _wrap(line: str, indent: int) -> list[str]:
    return textwrap.wrap(line, WIDTH, subsequent_indent=" " * indent, break_on_hyphens=False) or [""]


# --------------------------------------------------------------------------- the config, described


def describe(config: str, fixed: Sequence[str] = ()) -> list[str]:
    """The config groups with their options and every key with its type and default (as composed)."""
    cfg = C.compose([], config)
    lines = ["", "config groups (GROUP=OPTION; the default in brackets):"] if K.groups(config) else []
    for g in K.groups(config):
        chosen = _chosen(cfg, g)
        opts = ", ".join(f"[{o}]" if o == chosen else o for o in C.available(g))
        lines += _wrap(f"  {g:<10} {opts}" + ("" if chosen else " (default: none)"), 13)
    lines += ["", "config keys (KEY: type = default):"]
    rows = list(_rows(cfg, ROOTS[config], "", fixed))
    width = min(40, max(len(k) for k, _, _ in rows) + 1)
    for key, hint, value in rows:
        lines += _wrap(f"  {key + ':':<{width}} {K.type_name(hint)} = {value}", 4 + width)
    if "launcher" in K.groups(config):
        lines += _other_launchers(_chosen(cfg, "launcher"), width)
    if fixed:
        lines += ["", f"  ({', '.join(fixed)}: presets used whole; their keys are shown by --cfg job)"]
    return lines


def _chosen(cfg: DictConfig, group: str) -> str | None:
    name = OmegaConf.select(cfg, f"{group}.name", default=None)
    return name if name in C.available(group) else None


def _rows(node: DictConfig, cls: type, prefix: str, fixed: Sequence[str]) -> Iterator[tuple[str, Any, str]]:
    for name, hint in K.fields_of(cls).items():
        key = prefix + name
        if key in fixed:
            continue
        if OmegaConf.is_missing(node, name):
            yield key, hint, "??? (required)"
            continue
        child = node[name]
        typed = OmegaConf.get_type(child) if isinstance(child, DictConfig) else None
        if dataclasses.is_dataclass(hint) or (hint is Any and dataclasses.is_dataclass(typed)):
            yield from _rows(child, typing.cast(type, typed or hint), f"{key}.", fixed)
            continue
        value = OmegaConf.to_container(child, resolve=True) if OmegaConf.is_config(child) else child
        yield key, hint, show(value)


def _other_launchers(chosen: str | None, width: int) -> list[str]:
    base = set(K.fields_of(C.LAUNCHERS[chosen])) if chosen in C.LAUNCHERS else set()
    lines = []
    for option, schema in C.LAUNCHERS.items():
        if option == chosen:
            continue
        lines.append(f"  with launcher={option}, also:")
        for f in dataclasses.fields(schema):
            if f.name in base:
                continue
            hint = K.fields_of(schema)[f.name]
            value = f.default_factory() if callable(f.default_factory) else f.default
            lines += _wrap(
                f"    {'launcher.' + f.name + ':':<{width - 2}} {K.type_name(hint)} = {show(value)}",
                6 + width,
            )
    return lines
