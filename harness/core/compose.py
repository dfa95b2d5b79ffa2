"""Composing a config with Hydra, its overrides checked against the typed schema.

``compose`` (``harness.core.config.compose``) screens every override first: a Hydra setting
(``hydra.*``, ``hydra/*``), a sweep (``model=a,b``, ``range(...)``), a package (``@``) or a
group chosen in an unsupported way is refused before composing. After composing, a key the
schema does not have (``+foo=1``, ``+train.lrr=1``), a group left empty and an interpolation
that does not resolve are refused too. Every message is one line that names the override and
what is allowed (Hydra's own multi-line errors are shortened by ``one_line``).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable, Collection, Iterator
from dataclasses import fields
from functools import cache
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from harness.core import config as C
from harness.core.config_jobs import ROOTS


class OverrideError(ValueError):
    """An override that is refused; the message names it and what is allowed."""


SWEEP_HINT = (
    "one config takes one value; several runs are a sweep: harness sweep sweep=<name> "
    "(a preset's models, tokens, nproc, variants or points), or quote the value ('a,b') for a string"
)


def key_of(text: str) -> str:
    """The key of an override string (``+train.lr=1`` -> ``train.lr``), parsed the way Hydra does."""
    return _parse(text).key_or_group


def value_of(text: str) -> Any:
    """The value of an override string (``sweep='my plans/x.yaml'`` -> ``my plans/x.yaml``)."""
    o = _parse(text)
    return None if o.is_delete() or o.is_sweep_override() else o.value()


def _parse(text: str) -> Any:
    try:
        return _parser().parse_override(text)
    except HydraException as e:  # Hydra's grammar errors: one line naming the override
        detail = " ".join(str(e).split())
        raise OverrideError(
            f"cannot parse override {text!r}: {detail}; allowed: KEY=VALUE, GROUP=OPTION"
        ) from None


@cache
def _parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def screen(
    overrides: list[str], groups: Collection[str], available: Callable[[str], list[str]], root: type
) -> None:
    """Refuse what Hydra would silently ignore or misread, before composing."""
    for text in overrides:
        o = _parse(text)
        key = o.key_or_group
        if not key:
            raise OverrideError(f"override {text!r} has no key; allowed: KEY=VALUE")
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            raise OverrideError(
                f"{text!r} is refused: harness does not use Hydra's own settings (hydra.*, hydra/*); "
                "to run on SLURM use launcher=slurm"
            )
        if o.package is not None:
            raise OverrideError(f"{text!r} is refused: package overrides (@) are not supported")
        if o.is_sweep_override():
            raise OverrideError(f"{text!r} is a sweep over several values: {SWEEP_HINT}")
        if "/" in key:
            raise OverrideError(
                f"{text!r} is refused: {key!r} is not a config group; allowed groups: {', '.join(groups)}"
            )
        if key in groups:
            value = None if o.is_delete() else o.value()
            if o.is_add() or o.is_force_add() or o.is_delete():
                raise OverrideError(f"{text!r} is refused: choose a preset with {key}=<option>")
            if not isinstance(value, str):
                raise OverrideError(
                    f"{text!r} is refused: {key} takes one preset; allowed: {', '.join(available(key))}"
                )
        elif o.is_delete() and not _in_dict(root, key):
            raise OverrideError(
                f"{text!r} is refused: {key} is a key of the typed config; set a value instead "
                "(~ removes only an entry of a dict key, e.g. launcher.additional_parameters)"
            )


def _in_dict(cls: type, key: str) -> bool:
    """Whether key lies inside a dict-typed field (whose entries may be added and removed)."""
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        hint = fields_of(cls).get(part) if dataclasses.is_dataclass(cls) else None
        if hint is Any:  # the launcher: any option's schema
            rest = ".".join(parts[i + 1 :])
            return any(_in_dict(schema, rest) for schema in C.LAUNCHERS.values())
        if typing.get_origin(hint) is dict or hint is dict:
            return True
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            return False
        cls = hint
    return False


# --------------------------------------------------------------------------- the schema


_FIELDS: dict[type, dict[str, Any]] = {}


def fields_of(cls: type) -> dict[str, Any]:
    """A config dataclass's fields and their resolved type hints, in declaration order."""
    if cls not in _FIELDS:
        hints = typing.get_type_hints(cls)
        _FIELDS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return _FIELDS[cls]


def walk(cls: type, prefix: str = "") -> Iterator[tuple[str, Any, type]]:
    """(dotted key, type hint, owning dataclass) for every leaf and section of a schema."""
    for name, hint in fields_of(cls).items():
        yield prefix + name, hint, cls
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            yield from walk(hint, f"{prefix}{name}.")


def type_name(hint: Any) -> str:
    """``int``, ``float | None``, ``list[str]``, ``dict`` ... as a user reads them."""
    if hint is Any:
        return "any"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin in (list, tuple):
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is dict:
        return "dict"
    return getattr(hint, "__name__", str(hint))


def extra_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Keys of a composed config that its schema does not have (added with + or ++).

    Each typed node is checked against its own dataclass (a launcher against the schema its
    option selected); ``dict`` fields take any key.
    """
    cls = OmegaConf.get_type(node)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return []
    known = fields_of(cls)
    out: list[str] = []
    for key in map(str, node):
        if key not in known:
            out.append(prefix + key)
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            out += extra_keys(child, f"{prefix}{key}.")
    return out


def unknown_key_message(key: str, root: type, choose: Callable[[str], type | None]) -> str:
    """The message for a key the schema lacks: "unknown key 'train.lrr'; did you mean 'train.lr'? ...".

    ``choose(section)`` gives the schema of an ``Any``-typed section (the launcher chosen).
    """
    cls: type | None = root
    done: list[str] = []
    for part in key.split("."):
        if cls is None:
            break
        fields = fields_of(cls)
        where = ".".join(done)
        if part not in fields:
            close = difflib.get_close_matches(part, list(fields), n=1, cutoff=0.75)
            hint = f"; did you mean {'.'.join([*done, close[0]])!r}?" if close else ""
            return f"unknown key {key!r}{hint} ({where or 'the top level'} has: {', '.join(fields)})"
        done.append(part)
        hint = fields[part]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            cls = hint
        else:
            cls = choose(".".join(done)) if hint is Any else None
    return f"unknown key {key!r}"


# --------------------------------------------------------------------------- Hydra's errors

_NOISE = re.compile(r"^(full_key:|object_type=|reference_type=|Set the environment variable|See https?://)")


def one_line(e: BaseException, unknown: Callable[[str], str], available: Callable[[str], list[str]]) -> str:
    """Hydra's and OmegaConf's multi-line errors as the one line that names the value."""
    text = str(e)
    found = re.search(r"Could not find '([^'/]+)/([^']+)'", text)
    if found and "Available options" in text:
        group, option = found.groups()
        return (
            f"Could not find '{group}/{option}': {option!r} is not a preset; "
            f"allowed: {', '.join(available(group))}"
        )
    key = getattr(e.__cause__, "full_key", None) or getattr(e, "full_key", None)
    if re.match(r"Could not (override|append to config)", text) or isinstance(e, ConfigKeyError):
        m = re.search(r"Could not override '([^']+)'", text)
        if "An item is already at" in text:
            return f"{text.splitlines()[0].strip()} (set it without +)"
        return unknown(str(key or (m.group(1) if m else "?")))
    parts = [text, str(e.__cause__)] if e.__cause__ is not None else [text]
    lines = [
        ln.strip() for p in parts for ln in p.splitlines() if ln.strip() and not _NOISE.match(ln.strip())
    ]
    merged = re.match(r"Error merging override (.+)$", lines[0]) if lines else None
    if merged and len(lines) > 1:
        return f"{merged.group(1)}: {'; '.join(lines[1:])}"
    line = "; ".join(dict.fromkeys(lines)) or type(e).__name__
    return line if not key or str(key) in line else f"{key}: {line}"


# --------------------------------------------------------------------------- composing


def groups(config_name: str = "config") -> list[str]:
    """The config groups of a primary config: its schema's fields that have a folder of presets."""
    return [f.name for f in fields(ROOTS[config_name]) if (C.CONFIG_DIR / f.name).is_dir()]


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Hydra's compose of ``configs/<config_name>.yaml`` with the checks above; raises ConfigError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = list(overrides or [])
    if config_name not in ROOTS:
        raise C.ConfigError(f"config {config_name!r} is not one of {', '.join(ROOTS)}")
    root, grps = ROOTS[config_name], groups(config_name)
    C.register()
    GlobalHydra.instance().clear()
    try:
        screen(overrides, grps, C.available, root)
        with initialize_config_dir(config_dir=str(C.CONFIG_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=overrides)
        extra = extra_keys(cfg)
        if extra:
            raise OverrideError("; ".join(_unknown(k, root, overrides) for k in extra))
        missing = sorted(k for k in OmegaConf.missing_keys(cfg) if k.split(".")[0] in grps)
        if missing:
            raise OverrideError(f"no value for {', '.join(missing)}: allowed: {missing[0]}=<preset>")
        OmegaConf.resolve(cfg)  # a bad ${...} fails here, in one line, not deep inside a run
    except OverrideError as e:
        raise C.ConfigError(str(e)) from None
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise C.ConfigError(one_line(e, lambda k: _unknown(k, root, overrides), C.available)) from None
    return cfg


def _unknown(key: str, root: type, overrides: list[str]) -> str:
    """The unknown-key message; a launcher key is looked up in the schema of the launcher chosen."""
    chosen = [v for v in map(_launcher_choice, overrides) if v]
    name = chosen[-1] if chosen else "local"  # configs/config.yaml's default
    msg = unknown_key_message(key, root, lambda section: C.LAUNCHERS.get(name))
    if key.startswith("launcher.") and key.count(".") == 1:
        has = [n for n, s in C.LAUNCHERS.items() if key.split(".")[1] in fields_of(s)]
        msg += f"; launcher={name} has no such key" + (f" (launcher={'/'.join(has)} has)" if has else "")
    return msg


def _launcher_choice(text: str) -> str | None:
    try:
        o = _parse(text)
    except OverrideError:
        return None
    value = o.value() if o.key_or_group == "launcher" and not o.is_delete() else None
    return value if isinstance(value, str) else None
