"""Load one YAML file into :class:`NonsiteConfig`, reporting a bad value by file, line, key and fix."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from nonsite.config.cameras import register_secrets
from nonsite.config.root import NonsiteConfig

#: ``${VAR}`` / ``${VAR:-default}``, and the escape ``$${`` for a literal ``${`` (what the console writes for a
#: value that came from a user: values from the console or the API are data and are never expanded).
_VAR = re.compile(r"\$\$\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


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


#: Bounds checked on the YAML event stream before any object is built (a config is a few KiB, a dozen levels).
MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_YAML_DEPTH = 64
#: Nodes of the document with every alias expanded (an alias bomb of a few hundred bytes expands to billions).
MAX_YAML_NODES = 200_000
#: Digits of an integer (Python refuses to convert more than 4300).
MAX_INT_DIGITS = 1000
_LONG_INT = re.compile(r"^[-+]?(?:0x[0-9a-fA-F_]+|0b[01_]+|[0-9_]+)$")


def read_yaml_text(p: Path) -> str:
    """The text of a YAML file: UTF-8 (a BOM is allowed), at most :data:`MAX_YAML_BYTES`; ConfigError otherwise."""
    try:
        size = p.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"{p}: {size} bytes; a configuration file has at most {MAX_YAML_BYTES} bytes")
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read it ({e.strerror or e})") from None
    return decode_yaml_bytes(data, p)


def decode_yaml_bytes(data: bytes, p: Path) -> str:
    """``data`` (the bytes of file ``p``, already read) as text, checked as :func:`read_yaml_text` checks a file."""
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"{p}: {len(data)} bytes; a configuration file has at most {MAX_YAML_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{p}:{line}: byte 0x{data[e.start]:02x} is not UTF-8; save the file as UTF-8") from None


def check_yaml_shape(text: str, p: Path) -> None:
    """Refuse, before any object is built, a document nested deeper than :data:`MAX_YAML_DEPTH`, one whose
    aliases expand to more than :data:`MAX_YAML_NODES` nodes, or an integer of more than :data:`MAX_INT_DIGITS`
    digits (ConfigError naming the line). The event stream is parsed without recursion."""
    depth = 0
    nodes = 0
    sizes: dict[str, int] = {}  # anchor -> nodes of its value, aliases inside expanded
    open_: list[tuple[str | None, int]] = []
    for event in yaml.parse(text, Loader=YamlLoader):
        line = event.start_mark.line + 1 if event.start_mark else 1
        if isinstance(event, yaml.ScalarEvent):
            nodes += 1
            if event.anchor:
                sizes[event.anchor] = 1
            if event.style is None and len(event.value) > MAX_INT_DIGITS and _LONG_INT.match(event.value):
                raise ConfigError(f"{p}:{line}: a number of {len(event.value)} digits; at most {MAX_INT_DIGITS}")
        elif isinstance(event, yaml.AliasEvent):
            nodes += sizes.get(event.anchor or "", 1)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(f"{p}:{line}: nested more than {MAX_YAML_DEPTH} levels deep; flatten it")
            open_.append((event.anchor, nodes))
            nodes += 1
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1
            anchor, start = open_.pop()
            if anchor:
                sizes[anchor] = nodes - start
        if nodes > MAX_YAML_NODES:
            raise ConfigError(f"{p}:{line}: the document expands to more than {MAX_YAML_NODES} values "
                              "(aliases included); a configuration is far smaller: remove the repeated aliases")


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


def _one_line(text: object) -> str:
    """``text`` on one line: runs of white space (newlines too) become one space, control characters escaped."""
    flat = " ".join(str(text).split())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)


def _loc(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        part = p if isinstance(p, int) else (str(p) if str(p).isprintable() and str(p) else repr(p))
        out += f"[{part}]" if isinstance(p, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def escape_value(value: Any) -> Any:
    """``value`` (strings inside lists and mappings too) written so that loading gives it back unchanged:
    every ``${`` becomes ``$${``. The console writes what users typed this way, so ``${CAM_PASSWORD}`` typed
    as a zone name stays that text and never reads the server's environment."""
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, dict):
        return {k: escape_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [escape_value(v) for v in value]
    return value


def expand_value(value: Any) -> Any:
    """``value`` as the loader reads it (``${VAR}`` expanded, ``$${`` unescaped); ValueError when a variable is
    not set."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    out = _expand(value, (), problems)
    if problems:
        raise ValueError(problems[0][1])
    return out


def _expand(value: Any, path: tuple[Any, ...], problems: list[tuple[tuple[Any, ...], str]]) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, (*path, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*path, i), problems) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def sub(m: re.Match[str]) -> str:
            if m[0] == "$${":
                return "${"
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


def load_config(path: str | os.PathLike[str], model: type[NonsiteConfig] = NonsiteConfig, *,
                data: bytes | None = None) -> NonsiteConfig:
    """Read, expand ``${VAR}`` / ``${VAR:-default}`` and validate a config file with ``model``: the plain
    :class:`NonsiteConfig` (central roles), or the typed model of the violation types where rules run
    (:func:`nonsite.pipeline.violations.load_config`). ``data``: the file's bytes, already read (the reload
    watcher validates exactly the bytes it hashed); ``path`` then only names the file and anchors relative paths.

    Raises :class:`ConfigError` with ``file:line: key: problem`` lines; never a traceback for bad input.
    """
    p = Path(path)
    if data is None and not p.is_file():
        raise ConfigError(f"{p}: config file not found; pass an existing YAML file with --config")
    cfg = load_model(p, model, what="the file must be a mapping of sections (cameras:, detector:, ...)", data=data)
    return _resolve_paths(cfg, p.parent.resolve())


def load_model(
    path: str | os.PathLike[str],
    model: type[M],
    *,
    what: str = "the file must be a mapping",
    defaults: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    unknown_key: str = UNKNOWN_KEY,
    data: bytes | None = None,
) -> M:
    """Read one YAML file (``${VAR}`` expanded) into ``model``; ``defaults`` fill top-level keys it leaves out,
    ``context`` is handed to the model's validators; ``unknown_key`` is the fix shown for a misspelt key;
    ``data``: the file's bytes when the caller has read them already (not read again).

    Raises :class:`ConfigError` with ``file:line: key: problem`` lines, as :func:`load_config` does.
    """
    p = Path(path)
    if data is not None:
        text = decode_yaml_bytes(data, p)
    elif not p.is_file():
        raise ConfigError(f"{p}: file not found")
    else:
        text = read_yaml_text(p)
    try:
        check_yaml_shape(text, p)
        node = yaml.compose(text, Loader=YamlLoader)
        raw = yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise ConfigError(f"{where}: not valid YAML ({_one_line(getattr(e, 'problem', None) or e)}); fix the syntax "
                          "there") from None
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - a value PyYAML's constructors trip over (`!!int ""`): a last guard
        raise ConfigError(f"{p}: cannot read a value ({_one_line(e) or type(e).__name__}); fix it there") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}:1: {what}")
    lines = _node_lines(node) if node is not None else {}
    problems: list[tuple[tuple[Any, ...], str]] = []
    data = _expand(raw, (), problems)
    if problems:
        loc, msg = problems[0]
        raise ConfigError(f"{p}:{line_of(lines, loc)}: {_loc(loc)}: {_one_line(msg)}")
    for k, v in (defaults or {}).items():
        data.setdefault(k, v)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        found = error_lines(e, str(p), lines, unknown_key=unknown_key)
        raise ConfigError("\n".join(_one_line(line) for line in found)) from None


def _resolve_paths(cfg: NonsiteConfig, base: Path) -> NonsiteConfig:
    data_dir = os.environ.get("NONSITE_DATA_DIR") or cfg.data_dir
    cfg.data_dir = str((base / data_dir).resolve()) if not os.path.isabs(data_dir) else data_dir
    for name in ("legal_basis", "document_font", "organisation", "documents"):
        value = getattr(cfg.cases, name)
        if value and not os.path.isabs(value):
            setattr(cfg.cases, name, str((base / value).resolve()))
    for cam in cfg.cameras:
        url = cam.source.url
        register_secrets(url)  # masked wherever it turns up (log lines, errors a library echoes)
        if "://" not in url and not url.startswith("device:"):
            cam.source.url = str((base / url).resolve()) if not os.path.isabs(url) else url
    return cfg


def config_schema(model: type[NonsiteConfig] = NonsiteConfig) -> dict[str, Any]:
    """JSON schema of the configuration file validated with ``model`` (docs/config.schema.json is that of the
    typed model: :func:`nonsite.pipeline.violations.config_schema`)."""
    return model.model_json_schema()
