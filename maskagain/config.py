"""Config machinery: dataclass trees, YAML files with ``defaults`` includes, dotted overrides.

Every command's configuration is a tree of dataclasses (the recipes' ``Config`` classes in
``maskagain.recipes``, built from sections such as ``maskagain.data.DataConfig`` and
``maskagain.engine.config.EngineConfig``). :func:`load_config` builds it once, at start-up:

1. :func:`load_yaml` reads a YAML file; a top-level ``defaults:`` entry (a path or a list of
   paths, relative to the file) names base files that are deep-merged first, the file on top.
2. ``key.sub=value`` overrides from the command line are applied to that raw tree.
3. :func:`from_dict` builds the dataclasses, coercing types; an unknown key, a wrong type or a
   value outside a ``Literal`` fails with a :class:`ConfigError` naming the dotted key, what was
   given and what would be valid (with close-match suggestions).
4. The root's ``validate()`` checks values and cross-field constraints (each section has a
   ``validate(path)`` raising :class:`ConfigError` with the dotted key).

Each field is documented by the string literal that follows it in its class (an attribute
docstring, as Sphinx reads them); :func:`field_docs` reads those, for ``--help``.

The resolved tree is saved with the run (:func:`save_config`). This module knows no schema and
imports nothing from the rest of the package; nothing here reads data.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import functools
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """An invalid configuration. ``str(err)`` is one actionable line naming the key."""


# ============================================================================ generic machinery
class RawValue(str):
    """A value typed on the command line: parsed according to the target field's type."""


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config, resolving its ``defaults`` (base files, deep-merged first)."""
    return _load_yaml(Path(path), seen=())


def _load_yaml(path: Path, seen: tuple[Path, ...]) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config {path} includes itself through 'defaults'")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {_one_line(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config {path} must hold a mapping at the top, got {type(data).__name__}"
        )
    bases = data.pop("defaults", None) or []
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for base in bases:
        merged = deep_merge(merged, _load_yaml(path.parent / base, (*seen, path)))
    return deep_merge(merged, data)


def deep_merge(base: Mapping, top: Mapping) -> dict:
    """Recursively merge mapping ``top`` over ``base`` (returns a new dict)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(tree: dict, overrides: Sequence[str]) -> dict:
    """Apply ``a.b.c=value`` strings to a raw config tree (values typed later by the schema)."""
    tree = copy.deepcopy(dict(tree))  # never write into the caller's (nested) dicts
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = RawValue(value.strip())
    return tree


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a raw mapping, coercing and checking every field."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key '{path or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    names = list(fields)
    for key in data:
        if key not in names:
            raise ConfigError(unknown_key(str(key), names, path))
    kwargs = {
        k: coerce(hints[k], _over_section_default(fields[k], hints[k], v), join_key(path, k))
        for k, v in data.items()
    }
    return cls(**kwargs)


def _over_section_default(f: dataclasses.Field, tp: Any, value: Any) -> Any:
    """A partial section keeps its parent's defaults: ``student: {name: vit_small}`` keeps the
    ``drop_path_rate`` of ``DistillConfig``'s default student, not ``ModelSpec``'s."""
    if not (dataclasses.is_dataclass(tp) and isinstance(value, Mapping)):
        return value
    if f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    base = {
        g.name: _plain_default(getattr(default, g.name))
        for g in dataclasses.fields(default)
        if g.init
    }
    return deep_merge(base, value)


def _plain_default(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def check_seeds(cfg: Any, path: str = "") -> None:
    """Every ``seed`` / ``*_seed`` integer of a config tree must be >= 0 (NumPy's seed
    sequences, used for masks, clips and replacements, reject negative entropy mid-run)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = join_key(path, f.name)
        if dataclasses.is_dataclass(value):
            check_seeds(value, key)
        elif (f.name == "seed" or f.name.endswith("_seed")) and isinstance(value, int):
            check(value >= 0, f"config key '{key}' must be >= 0, got {value}")


def to_dict(cfg: Any) -> dict:
    """Plain dict of a config tree (tuples become lists, so it round-trips through YAML)."""
    return _plain(dataclasses.asdict(cfg))


def field_docs(cls: type) -> dict[str, str]:
    """Each field of dataclass ``cls`` -> its attribute docstring (the string literal after the
    field in the class body, its own or a base class's), on one line; fields without one are
    left out."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_class_docs(klass.__module__, klass.__qualname__))
    return {f.name: docs[f.name] for f in dataclasses.fields(cls) if f.name in docs}


def _class_docs(module: str, qualname: str) -> dict[str, str]:
    tree = _module_tree(module)
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == qualname), None)
    docs = {}
    body = node.body if node is not None else []
    for item, after in zip(body, body[1:]):
        if (
            isinstance(item, ast.AnnAssign)
            and isinstance(item.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[item.target.id] = " ".join(after.value.value.split())
    return docs


@functools.cache
def _module_tree(module: str) -> ast.Module:
    """The parsed source of an imported module (empty when its source is not at hand)."""
    source = getattr(sys.modules.get(module), "__file__", None)
    if not source or not Path(source).is_file() or not source.endswith(".py"):
        return ast.Module(body=[], type_ignores=[])
    return ast.parse(Path(source).read_text(encoding="utf-8"))


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (it loads back with :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_config(
    cls: type,
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: Mapping | None = None,
    relative_to: str | Path | None = None,
) -> Any:
    """Validated config of type ``cls``: ``base`` (a raw tree, e.g. a run's saved sections),
    the YAML file at ``path`` merged over it, then the dotted ``overrides``. With
    ``relative_to`` (an absolute directory: the CLI's working directory) the ``data`` section's
    paths are made absolute against it (``DataConfig.resolve_paths``). Raises
    :class:`ConfigError` (one line naming the key) for anything invalid."""
    tree = deep_merge(base or {}, load_yaml(path) if path else {})
    cfg = from_dict(cls, apply_overrides(tree, overrides))
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    data = getattr(cfg, "data", None)
    if relative_to is not None and hasattr(data, "resolve_paths"):
        data.resolve_paths(relative_to)
    check_seeds(cfg)
    return cfg


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def join_key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def unknown_key(key: str, names: list[str], path: str) -> str:
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    hint = f"did you mean '{join_key(path, close[0])}'? " if close else ""
    return (
        f"unknown config key '{join_key(path, key)}'; {hint}"
        f"valid keys{' in ' + repr(path) if path else ''}: {', '.join(names)}"
    )


_BOOL_WORDS = {
    "true": True, "yes": True, "on": True, "1": True,
    "false": False, "no": False, "off": False, "0": False,
}  # fmt: skip


def coerce(tp: Any, value: Any, path: str) -> Any:
    """Check/convert ``value`` to type ``tp`` (the annotations used by config dataclasses)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(args, value, path)
    if isinstance(value, RawValue) and tp is not str and origin is not Literal:
        value = _parse_raw(value, path)
    if tp is Any:
        return _parse_raw(value, path) if isinstance(value, RawValue) else value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin is Literal:
        return _coerce_literal(args, value, path)
    if origin in (tuple, list) or tp in (tuple, list):
        return _coerce_sequence(tp, origin or tp, args, value, path)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{path}' expects a mapping, got {value!r}")
        item_tp = args[1] if len(args) == 2 else Any
        return {k: coerce(item_tp, v, join_key(path, str(k))) for k, v in value.items()}
    if tp in (int, float, bool, str):
        return _coerce_scalar(tp, value, path)
    return value


def _parse_raw(value: RawValue, path: str) -> Any:
    try:
        return yaml.safe_load(str(value)) if str(value) else ""
    except yaml.YAMLError:
        return str(value)


def _coerce_union(args: tuple, value: Any, path: str) -> Any:
    if type(None) in args and (
        value is None or (isinstance(value, str) and value in ("null", "None", "~"))
    ):
        return None
    options = [a for a in args if a is not type(None)]
    errors = []
    for option in options:
        try:
            return coerce(option, value, path)
        except ConfigError as err:
            errors.append(str(err))
    if len(errors) == 1:
        raise ConfigError(errors[0])
    names = " or ".join(_type_name(a) for a in args)
    raise ConfigError(f"config key '{path}' expects {names}, got {str(value)!r}")


def _coerce_literal(args: tuple, value: Any, path: str) -> Any:
    for option in args:
        if value == option or (isinstance(value, str) and str(option) == value):
            return option
    close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"config key '{path}' must be one of {', '.join(repr(a) for a in args)}, got {str(value)!r}{hint}"
    )


def _coerce_sequence(tp: Any, origin: type, args: tuple, value: Any, path: str) -> Any:
    if isinstance(value, (int, float, bool)):
        value = [value]  # a single value typed on the command line
    if isinstance(value, str):
        value = [v for v in (s.strip() for s in value.split(",")) if v] if value else []
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"config key '{path}' expects a list ({_type_name(tp)}), got {value!r}")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(
                f"config key '{path}' expects {len(args)} values ({_type_name(tp)}), got {list(value)!r}"
            )
        items = [coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
    else:
        item_tp = args[0] if args else Any
        items = [coerce(item_tp, _maybe_raw(v), f"{path}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _maybe_raw(v: Any) -> Any:
    return RawValue(v) if isinstance(v, str) and not isinstance(v, RawValue) else v


def _coerce_scalar(tp: type, value: Any, path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]
    elif tp in (int, float):
        number = _number(tp, value)
        if number is not None:
            return number
    elif tp is str:
        if isinstance(value, str):
            return str(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"config key '{path}' expects {_type_name(tp)}, got {value!r}")


def _number(tp: type, value: Any) -> int | float | None:
    """``value`` as an int or a float (``tp``), None when it is not one: a bool never is, a
    whole float is an int, a string is parsed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            return tp(value)
        except ValueError:
            return None
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) or (tp is float and isinstance(value, float)):
        return tp(value)
    return None


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` (one line naming the key) unless ``ok``: the
    one way configs validate."""
    if not ok:
        raise ConfigError(message)
