"""Write changes back into the operator's YAML file without disturbing the rest of it.

The console's zone editor saves a camera's zones here. The file is edited as a round-trip document
(ruamel.yaml): comments, key order, quoting, ``${VAR}`` references and indentation stay as they are;
only the camera's ``zones:`` change, and zones that keep their id keep their own comments. The result
is validated with the same loader the node starts with before it atomically replaces the file, so a
bad zone never reaches the disk.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.tokens import CommentToken
from ruamel.yaml.util import load_yaml_guess_indent

from nonsite.config.cameras import ZoneConfig
from nonsite.config.loader import ConfigError, escape_value, expand_value, load_config

ZONE_KEYS = ("id", "name", "kind", "polygon", "dwell_s", "schedule", "rules")


def _yaml_for(text: str) -> tuple[YAML, Any]:
    try:
        _, seq_indent, offset = load_yaml_guess_indent(text)
    except YAMLError:
        seq_indent, offset = 2, 0
    y = YAML()
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap long lines (URLs, names)
    y.indent(mapping=max(offset, 2), sequence=seq_indent or 2, offset=offset)
    return y, y.load(text)


def _is_default(key: Any, value: Any) -> bool:
    field = ZoneConfig.model_fields.get(str(key))
    if field is None or field.is_required():
        return False
    default = field.get_default(call_default_factory=True)
    return default is not None and value == default


def _zone_map(zone: Mapping[str, Any]) -> dict[str, Any]:
    """A zone dict in the file's form: known keys first; None, empty names and values equal to the field's
    default (e.g. an empty schedule) left out; the polygon as ``[[x, y], ...]`` on one line."""
    if not isinstance(zone, Mapping):
        raise ValueError(f"a zone must be a mapping of id, kind, polygon, ..., got {type(zone).__name__}")
    keys = [k for k in ZONE_KEYS if k in zone] + [k for k in zone if k not in ZONE_KEYS]
    out: dict[str, Any] = {}
    for k in keys:
        v = escape_value(zone[k])  # a value from the console is data: written so that it is never expanded
        if v is None or (k == "name" and v == "") or _is_default(k, v):
            continue
        if k == "polygon" and isinstance(v, Sequence) and not isinstance(v, str):
            seq = CommentedSeq()
            for pt in v:
                point = CommentedSeq(list(pt) if isinstance(pt, Sequence) and not isinstance(pt, str) else [pt])
                point.fa.set_flow_style()
                seq.append(point)
            seq.fa.set_flow_style()
            v = seq
        out[str(k)] = v
    return out


def _normal(key: str, value: Any) -> Any:
    """``value`` of zone field ``key`` as the loader reads it (expanded, validated, in JSON form)."""
    plain = expand_value(value)
    field = ZoneConfig.model_fields.get(key)
    if field is None:
        return plain
    adapter: TypeAdapter[Any] = TypeAdapter(field.annotation)
    return adapter.dump_python(adapter.validate_python(plain), mode="json")


def _same_value(key: str, old: Any, new: Any) -> bool:
    """True when the file's ``old`` already says ``new`` (both in the file's form): the file keeps its own
    spelling (quoting, ``${VAR}`` references, a schedule's default days left out), so re-saving unchanged
    zones leaves the file byte-identical."""
    if old == new:
        return True
    try:
        return bool(_normal(key, old) == _normal(key, new))
    except (ValueError, TypeError):
        return False


def _take_tail(zones: CommentedSeq) -> int:
    """Remove and count the blank lines after the last zone (they separate this camera from the next).
    ruamel keeps them on the last key of the last zone, or on the list's end when that value is a flow
    list (a polygon)."""
    blanks = 0
    if zones and isinstance(zones[-1], CommentedMap) and zones[-1]:
        last = zones[-1]
        item = last.ca.items.get(list(last.keys())[-1])
        token = item[2] if item else None
        if token is not None:
            body = token.value.rstrip("\n")
            blanks += len(token.value) - len(body) - (1 if body else 0)
            token.value = body + "\n" if body else "\n"
            if not body:
                item[2] = None
    ends = [t for t in zones.ca.end or [] if t is not None and t.value.strip("\n") == ""]
    blanks += sum(t.value.count("\n") for t in ends)
    zones.ca.end = [t for t in zones.ca.end or [] if t not in ends]
    return max(blanks, 0)


def _blank(n: int) -> list[CommentToken]:
    return [CommentToken("\n", CommentMark(0), None) for _ in range(n)]


def _put_tail(cameras: CommentedSeq, index: int, blanks: int) -> None:
    """Put ``blanks`` blank lines after camera ``index``: before the next camera, or after its last zone."""
    if not blanks:
        return
    if index + 1 < len(cameras):
        pre = cameras.ca.items.setdefault(index + 1, [None, None, None, None])
        pre[1] = _blank(blanks) + list(pre[1] or [])
        return
    zones = cameras[index].get("zones")
    if not isinstance(zones, CommentedSeq) or not zones or not isinstance(zones[-1], CommentedMap):
        return
    last = zones[-1]
    key = list(last.keys())[-1]
    if isinstance(last[key], list):
        zones.ca.end = list(zones.ca.end or []) + _blank(blanks)
    else:
        item = last.ca.items.setdefault(key, [None, None, None, None])
        token = item[2]
        if token is None:
            item[2] = CommentToken("\n" * (blanks + 1), CommentMark(0), None)
        else:
            token.value = token.value.rstrip("\n") + "\n" * (blanks + 1)


def _apply_zones(cameras: CommentedSeq, index: int, zones: list[dict[str, Any]]) -> None:
    """Set camera ``index``'s zones in place: zones that keep their id keep their comments."""
    camera = cameras[index]
    old = camera.get("zones")
    if not isinstance(old, CommentedSeq) or not old or old.fa.flow_style():
        camera["zones"] = CommentedSeq([CommentedMap(z) for z in zones])
        return
    blanks = _take_tail(old)
    by_id = {m.get("id"): m for m in old if isinstance(m, CommentedMap)}
    result: list[CommentedMap] = []
    for z in zones:
        m = by_id.pop(z.get("id"), None)
        if m is None:
            result.append(CommentedMap(z))
            continue
        for k in [k for k in m if k not in z]:
            del m[k]
        for k, v in z.items():
            if k not in m or not _same_value(k, m[k], v):
                m[k] = v
        result.append(m)
    kept = {id(m) for m in result}
    before = {id(o) for o in old}
    if [id(m) for m in old if id(m) in kept] == [id(m) for m in result if id(m) in before]:
        # Same order: delete the removed zones and insert the new ones in place (comments stay put).
        for i in range(len(old) - 1, -1, -1):
            if id(old[i]) not in kept:
                del old[i]
        for i, m in enumerate(result):
            if i >= len(old) or old[i] is not m:
                old.insert(i, m)
    else:
        old.clear()
        old.extend(result)
    if not old:  # an empty list is written as [] on the key's line: comments above its items go with them
        camera["zones"] = CommentedSeq()
        item = camera.ca.items.get("zones")
        if item is not None and len(item) > 3:
            item[3] = None
    _put_tail(cameras, index, blanks)


def update_camera_zones(config_path: str | os.PathLike[str], camera_id: str, zones: list[dict[str, Any]],
                        loader: Callable[[Path], object] = load_config) -> None:
    """Replace the ``zones:`` of camera ``camera_id`` in the config file, keeping everything else.

    Raises ``KeyError`` when no camera has that id, ``ValueError`` with the loader's one-line message
    (file:line: key: fix) when the result would not load; the file is untouched in both cases."""
    path = Path(config_path)
    text = path.read_text(encoding="utf-8")
    try:
        y, doc = _yaml_for(text)
    except YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e}); fix the file before editing zones") from None
    cameras = doc.get("cameras") if isinstance(doc, CommentedMap) else None
    index = next((i for i, c in enumerate(cameras or []) if isinstance(c, CommentedMap) and c.get("id") == camera_id),
                 None)
    if index is None:
        raise KeyError(camera_id)
    _apply_zones(cameras, index, [_zone_map(z) for z in zones])
    buf = io.StringIO()
    y.dump(doc, buf)
    new_text = buf.getvalue()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_text)
        try:
            loader(tmp)  # the loader the cameras run with (typed rules), so what it refuses never lands
        except ConfigError as e:
            raise ValueError(str(e).replace(str(tmp), str(path))) from None
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
