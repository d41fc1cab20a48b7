"""Load one YAML file into :class:`NonsiteConfig`, reporting a bad value by file, line, key and fix."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from nonsite.config.root import NonsiteConfig

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


M = TypeVar("M", bound=BaseModel)


class YamlLoader(yaml.SafeLoader):
    """YAML 1.1 without sexagesimal numbers: ``start: 07:30`` is the string '07:30' (a time of day), not 450."""


_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
YamlLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
YamlLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


class ConfigError(Exception):
    """A configuration problem; ``str()`` is the one-line message shown to the user (exit code 2)."""


class LocatedError(ValueError):
    """Raised by a model validator about a value deeper than the model it checks (a cross-reference, a
    duplicate id): ``loc`` is the key path below that model, so the message names the offending key's line."""

    def __init__(self, loc: tuple[Any, ...], message: str) -> None:
        self.loc = tuple(loc)
        super().__init__(message)


def _node_lines(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Map every key path of a composed YAML document to its 1-based line."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            lines.update(_node_lines(v, (*path, k.value)))
            lines[(*path, k.value)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            lines.update(_node_lines(v, (*path, i)))
    return lines


def _loc(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _expand(value: Any, path: tuple[Any, ...], problems: list[tuple[tuple[Any, ...], str]]) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, (*path, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*path, i), problems) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def sub(m: re.Match[str]) -> str:
            name, default = m["name"], m["default"]
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            problems.append((path, f"environment variable {name} is not set; export {name}=... before running"))
            return ""

        return _VAR.sub(sub, value)
    return value


UNKNOWN_KEY = "unknown key; check its spelling against docs/config.schema.json or remove it"


def line_of(lines: Mapping[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int:
    """The line of key path ``loc`` (or of the nearest mapping above it that has one); 1 when none."""
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1


def error_lines(
    e: ValidationError, where: str, lines: Mapping[tuple[Any, ...], int], *, unknown_key: str = UNKNOWN_KEY
) -> list[str]:
    """One ``where:line: key: fix`` line per validation error (a :class:`LocatedError` points deeper)."""
    msgs = []
    for err in e.errors():
        # pydantic reports tuple items as list indexes past the field; keep the key path we know.
        loc = tuple(err["loc"])
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, LocatedError):
            loc = (*loc, *ctx_err.loc)
            msg = str(ctx_err)
        elif err["type"] == "extra_forbidden":
            msg = unknown_key
        elif err["type"] == "missing":
            msg = "required key is missing; add it"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
        msgs.append(f"{where}:{line_of(lines, loc)}: {_loc(loc)}: {msg}")
    return msgs


def load_config(path: str | os.PathLike[str]) -> NonsiteConfig:
    """Read, expand ``${VAR}`` / ``${VAR:-default}`` and validate a config file.

    Raises :class:`ConfigError` with ``file:line: key: problem`` lines; never a traceback for bad input.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found; pass an existing YAML file with --config")
    cfg = load_model(p, NonsiteConfig, what="the file must be a mapping of sections (cameras:, detector:, ...)")
    return _resolve_paths(cfg, p.parent.resolve())


def load_model(
    path: str | os.PathLike[str],
    model: type[M],
    *,
    what: str = "the file must be a mapping",
    defaults: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    unknown_key: str = UNKNOWN_KEY,
) -> M:
    """Read one YAML file (``${VAR}`` expanded) into ``model``; ``defaults`` fill top-level keys it leaves out,
    ``context`` is handed to the model's validators; ``unknown_key`` is the fix shown for a misspelt key.

    Raises :class:`ConfigError` with ``file:line: key: problem`` lines, as :func:`load_config` does.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found")
    text = p.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=YamlLoader)
        raw = yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', e)}); fix the syntax there") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}:1: {what}")
    lines = _node_lines(node) if node is not None else {}
    problems: list[tuple[tuple[Any, ...], str]] = []
    data = _expand(raw, (), problems)
    if problems:
        loc, msg = problems[0]
        raise ConfigError(f"{p}:{line_of(lines, loc)}: {_loc(loc)}: {msg}")
    for k, v in (defaults or {}).items():
        data.setdefault(k, v)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        raise ConfigError("\n".join(error_lines(e, str(p), lines, unknown_key=unknown_key))) from None


def _resolve_paths(cfg: NonsiteConfig, base: Path) -> NonsiteConfig:
    data_dir = os.environ.get("NONSITE_DATA_DIR") or cfg.data_dir
    cfg.data_dir = str((base / data_dir).resolve()) if not os.path.isabs(data_dir) else data_dir
    for name in ("legal_basis", "document_font", "organisation"):
        value = getattr(cfg.cases, name)
        if value and not os.path.isabs(value):
            setattr(cfg.cases, name, str((base / value).resolve()))
    for cam in cfg.cameras:
        url = cam.source.url
        if "://" not in url and not url.startswith("device:"):
            cam.source.url = str((base / url).resolve()) if not os.path.isabs(url) else url
    return cfg


def config_schema() -> dict[str, Any]:
    """JSON schema of the configuration file (published as docs/config.schema.json)."""
    return NonsiteConfig.model_json_schema()
