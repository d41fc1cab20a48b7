"""Weights registry: a model name -> file, version, sha256, classes, and where to find the file.

Built-in entries live in ``registry.yaml`` next to this module; models trained later are added with
:func:`register` to ``<cache>/registry.local.yaml`` (``<cache>`` is ``models/weights/``, git-ignored).

:func:`resolve` turns a name or a path into a local file, in this order:

1. an explicit path to an existing file (a registry entry is matched by sha256 when one fits);
   for a name whose entry has a ``path`` (a locally trained model, or a ``models/zoo/`` file shipped in the
   repository: relative paths in ``registry.yaml`` are relative to this package), that file;
2. ``$NONSITE_MODELS_DIR/<file>``;
3. ``<cache>/<file>``;
4. the entry's normal download (ultralytics' own asset download for the official ``.pt``, a pinned URL
   otherwise), saved into ``<cache>``.

The sha256 of a file found for a registry name is checked; a mismatch is an error. An official file
downloaded in step 4 may differ from the file shipped to offline machines, so its actual sha256 is
recorded in a json beside it (and checked against that from then on).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nonsite.models.base import WeightsInfo

log = logging.getLogger(__name__)

ENV_MODELS_DIR = "NONSITE_MODELS_DIR"
"""Folder holding weights files by their registry file names (offline machines point it at a share)."""
ENV_WEIGHTS_CACHE = "NONSITE_WEIGHTS_CACHE"
"""Overrides the cache folder (default ``<repo>/models/weights``): downloads, ONNX exports, local registry."""

BUILTIN_REGISTRY = Path(__file__).with_name("registry.yaml")
LOCAL_REGISTRY_NAME = "registry.local.yaml"
WEIGHT_SUFFIXES = {".pt": "pt", ".onnx": "onnx", ".xml": "openvino"}
"""Weights file suffix -> format (an OpenVINO IR is named by its ``.xml``; its ``.bin`` sits beside it)."""
DOWNLOAD_TIMEOUT_S = 60.0


class WeightsError(Exception):
    """A model could not be resolved or loaded; the message names the thing and the fix."""


class WeightsNotFound(WeightsError, FileNotFoundError):
    """No file for a model name or path in any of the places looked."""

    def __init__(self, message: str, looked: list[str] | None = None) -> None:
        super().__init__(message)
        self.looked = list(looked or [])


class WeightsChecksumError(WeightsError):
    """A weights file was found but its sha256 is not the registered one."""


class _Download(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(None, description="Direct download URL (pinned to a commit or release).")
    ultralytics_asset: str | None = Field(
        None, description="Official ultralytics asset name, fetched with ultralytics' own download."
    )


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str = Field(description="File name looked up in $NONSITE_MODELS_DIR and the cache.")
    format: Literal["pt", "onnx", "openvino"] = Field(
        description="pt: ultralytics checkpoint; onnx: ONNX model; openvino: OpenVINO IR (.xml with its .bin)."
    )
    family: Literal["yolo", "yolox"] = Field("yolo", description="Output decoding family.")
    version: str = Field(description="Version recorded with every detection's evidence.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the file.")
    classes: list[str] = Field(description="Class index -> name.")
    imgsz: int | None = Field(None, description="Native input size (fixed-size ONNX) or training size.")
    license: str = ""
    description: str = ""
    download: _Download | None = None
    path: str | None = Field(
        None,
        description="Where the file is: in the local registry an absolute path; in registry.yaml a path relative "
        "to its folder, for weights this project trained and ships in models/zoo/ (e.g. zoo/street.onnx).",
    )
    companions: dict[str, str] = Field(
        default_factory=dict,
        description="Files the model needs beside it (an OpenVINO IR's .bin): file name -> sha256, checked too.",
    )


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    file: str
    format: str
    family: str
    version: str
    sha256: str
    classes: tuple[str, ...]
    imgsz: int | None = None
    license: str = ""
    description: str = ""
    download_url: str | None = None
    ultralytics_asset: str | None = None
    path: str | None = None
    origin: str = "builtin"
    """``builtin`` (registry.yaml) or ``local`` (registry.local.yaml)."""
    companions: tuple[tuple[str, str], ...] = ()
    """Files needed beside the weights file (name, sha256): an OpenVINO IR's ``.bin``."""


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights file found on disk, with what the evidence records about it."""

    path: Path
    name: str
    version: str
    sha256: str
    format: str
    family: str = "yolo"
    classes: list[str] = field(default_factory=list)
    imgsz: int | None = None
    source: str = "path"
    """Where it was found: ``path``, ``NONSITE_MODELS_DIR``, ``cache``, ``download`` or ``registered``."""

    def info(self, classes: list[str] | None = None) -> WeightsInfo:
        return WeightsInfo(
            name=self.name,
            version=self.version,
            sha256=self.sha256,
            path=str(self.path),
            classes=list(classes if classes is not None else self.classes),
        )


# --------------------------------------------------------------------------------------------- places


def cache_dir() -> Path:
    """The git-ignored weights cache (downloads, ONNX exports, the local registry)."""
    env = os.environ.get(ENV_WEIGHTS_CACHE)
    return Path(env).expanduser() if env else Path(__file__).resolve().parent / "weights"


def models_dir() -> Path | None:
    env = os.environ.get(ENV_MODELS_DIR)
    return Path(env).expanduser() if env else None


def local_registry_path() -> Path:
    return cache_dir() / LOCAL_REGISTRY_NAME


# --------------------------------------------------------------------------------------------- hashing

_sha_cache: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """sha256 of a file (cached per path, size and mtime within the process)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _sha_cache[key] = h.hexdigest()
    return _sha_cache[key]


# --------------------------------------------------------------------------------------------- registry


def _read_entries(path: Path, origin: str) -> dict[str, RegistryEntry]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return {}
    except yaml.YAMLError as e:
        raise WeightsError(f"{path} is not valid YAML ({e}); fix or delete it.") from e
    if not isinstance(raw, dict):
        raise WeightsError(f"{path} must map model names to entries; fix or delete it.")
    out: dict[str, RegistryEntry] = {}
    for name, body in raw.items():
        try:
            e = _Entry.model_validate(body)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise WeightsError(f"{path}: entry '{name}' field '{where}': {first['msg']}; fix that entry.") from err
        out[str(name)] = RegistryEntry(
            name=str(name),
            file=e.file,
            format=e.format,
            family=e.family,
            version=e.version,
            sha256=e.sha256,
            classes=tuple(e.classes),
            imgsz=e.imgsz,
            license=e.license,
            description=e.description,
            download_url=e.download.url if e.download else None,
            ultralytics_asset=e.download.ultralytics_asset if e.download else None,
            path=_entry_path(e.path, path.parent),
            origin=origin,
            companions=tuple(sorted(e.companions.items())),
        )
    return out


def _entry_path(raw: str | None, folder: Path) -> str | None:
    """An entry's ``path``: absolute as written, or relative to the registry file's folder (``zoo/...``)."""
    if not raw:
        return None
    p = Path(raw).expanduser()
    return str(p if p.is_absolute() else (folder / p).resolve())


def load_registry() -> dict[str, RegistryEntry]:
    """Built-in entries plus the local ones (a local entry never replaces a built-in one)."""
    entries = _read_entries(local_registry_path(), "local")
    entries.update(_read_entries(BUILTIN_REGISTRY, "builtin"))
    return entries


def builtin_names() -> set[str]:
    """Names in the shipped registry.yaml (a trained or exported model cannot take one)."""
    return set(_read_entries(BUILTIN_REGISTRY, "builtin"))


def get_entry(name: str) -> RegistryEntry | None:
    return load_registry().get(name)


def register(
    name: str,
    path: str | Path,
    classes: list[str],
    version: str,
    *,
    description: str = "",
    imgsz: int | None = None,
) -> RegistryEntry:
    """Record a trained model under ``name`` in the local registry (``<cache>/registry.local.yaml``).

    The file stays where it is (its absolute path and sha256 are recorded); registering the same name
    again replaces the entry. Built-in names cannot be replaced."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise WeightsNotFound(f"Cannot register '{name}': {p} does not exist; pass the trained weights file.")
    fmt = WEIGHT_SUFFIXES.get(p.suffix.lower())
    if fmt is None:
        raise WeightsError(f"Cannot register {p}: only .pt, .onnx and OpenVINO .xml weights are supported.")
    companions = _companions(p, fmt)
    if name in _read_entries(BUILTIN_REGISTRY, "builtin"):
        raise WeightsError(f"'{name}' is a built-in model name; register the trained model under another name.")
    if not classes:
        raise WeightsError(f"Cannot register '{name}' without its class names (index -> name).")
    reg = local_registry_path()
    reg.parent.mkdir(parents=True, exist_ok=True)
    raw: dict = {}
    if reg.is_file():
        raw = yaml.safe_load(reg.read_text(encoding="utf-8")) or {}
    body = {
        "file": p.name,
        "format": fmt,
        "family": "yolo",
        "version": str(version),
        "sha256": sha256_file(p),
        "classes": [str(c) for c in classes],
        "path": str(p),
    }
    if companions:
        body["companions"] = companions
    if imgsz:
        body["imgsz"] = int(imgsz)
    if description:
        body["description"] = description
    _Entry.model_validate(body)
    raw[name] = body
    _atomic_write(reg, yaml.safe_dump(raw, sort_keys=False, allow_unicode=True).encode("utf-8"))
    entry = _read_entries(reg, "local")[name]
    log.info("registered model %s (%s, sha256 %s) in %s", name, p, body["sha256"][:12], reg)
    return entry


def _companions(p: Path, fmt: str) -> dict[str, str]:
    """The files a weights file needs beside it, with their sha256 (an OpenVINO IR's ``.bin``)."""
    if fmt != "openvino":
        return {}
    weights = p.with_suffix(".bin")
    if not weights.is_file():
        raise WeightsNotFound(f"{p} is an OpenVINO IR without its weights file {weights.name} beside it; export again.")
    return {weights.name: sha256_file(weights)}


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------- resolve


def _from_entry(entry: RegistryEntry, path: Path, source: str, sha: str, version: str | None = None) -> ResolvedWeights:
    return ResolvedWeights(
        path=path,
        name=entry.name,
        version=version or entry.version,
        sha256=sha,
        format=entry.format,
        family=entry.family,
        classes=list(entry.classes),
        imgsz=entry.imgsz,
        source=source,
    )


def _check_sha(entry: RegistryEntry, path: Path) -> str:
    sha = sha256_file(path)
    if sha != entry.sha256:
        raise WeightsChecksumError(
            f"{path} has sha256 {sha}, but model '{entry.name}' is registered with {entry.sha256}: the file is "
            f"corrupt or a different model; replace it with the registered file (or delete it to fetch it again)."
        )
    for name, want in entry.companions:
        other = path.with_name(name)
        if not other.is_file():
            raise WeightsNotFound(
                f"{other} is missing: model '{entry.name}' needs it beside {path.name}; export the model again."
            )
        got = sha256_file(other)
        if got != want:
            raise WeightsChecksumError(
                f"{other} has sha256 {got}, but model '{entry.name}' is registered with {want} for it: the file is "
                f"corrupt or from another export; export the model again."
            )
    return sha


def _downloaded_record(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _cached_download(entry: RegistryEntry, looked: list[str]) -> ResolvedWeights | None:
    """An official ultralytics asset downloaded earlier (its sha256 recorded beside it)."""
    if not entry.ultralytics_asset:
        return None
    p = cache_dir() / entry.ultralytics_asset
    rec = _downloaded_record(p)
    if not (p.is_file() and rec.is_file()):
        looked.append(f"{p}: no earlier download")
        return None
    meta = json.loads(rec.read_text(encoding="utf-8"))
    sha = sha256_file(p)
    if sha != meta.get("sha256"):
        raise WeightsChecksumError(
            f"{p} has sha256 {sha}, but {rec.name} recorded {meta.get('sha256')} when it was downloaded: "
            f"the file changed or is truncated; delete both files to download it again."
        )
    return _from_entry(entry, p, "download", sha, version=meta.get("version"))


def _download(entry: RegistryEntry, looked: list[str]) -> ResolvedWeights | None:
    dest_dir = cache_dir()
    if entry.ultralytics_asset:
        dest = dest_dir / entry.ultralytics_asset
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
            from nonsite.models.torch_compat import ensure_torchvision_ops

            ensure_torchvision_ops()
            from ultralytics.utils.downloads import attempt_download_asset

            got = Path(attempt_download_asset(str(dest)))
            if not got.is_file():
                raise OSError("nothing was downloaded")
            if got != dest:
                shutil.copy2(got, dest)
        except Exception as e:  # noqa: BLE001  (any failure: offline, HTTP error, missing ultralytics)
            looked.append(f"ultralytics asset download of {entry.ultralytics_asset}: failed ({_short(e)})")
            return None
        sha = sha256_file(dest)
        version = f"{Path(entry.ultralytics_asset).stem}-official"
        record = {
            "model": entry.name,
            "asset": entry.ultralytics_asset,
            "url": entry.download_url,
            "sha256": sha,
            "version": version,
            "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        _atomic_write(_downloaded_record(dest), json.dumps(record, indent=2).encode("utf-8"))
        if sha != entry.sha256:
            log.warning(
                "downloaded official %s (sha256 %s) differs from the registered %s (%s); recorded its hash",
                entry.ultralytics_asset,
                sha,
                entry.file,
                entry.sha256,
            )
        return _from_entry(entry, dest, "download", sha, version=version)
    if entry.download_url:
        dest = dest_dir / entry.file
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{entry.file}.")
            try:
                with (
                    os.fdopen(fd, "wb") as f,
                    urllib.request.urlopen(  # noqa: S310 (pinned https URL)
                        entry.download_url, timeout=DOWNLOAD_TIMEOUT_S
                    ) as r,
                ):
                    shutil.copyfileobj(r, f)
                sha = sha256_file(tmp)
                if sha != entry.sha256:
                    raise WeightsChecksumError(
                        f"{entry.download_url} served a file with sha256 {sha}, not the registered {entry.sha256}"
                    )
                os.replace(tmp, dest)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        except Exception as e:  # noqa: BLE001
            looked.append(f"download {entry.download_url}: failed ({_short(e)})")
            return None
        return _from_entry(entry, dest, "download", sha)
    looked.append(f"download: model '{entry.name}' has no download source")
    return None


def _short(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:160]}" if msg else type(e).__name__


def _where_places(file: str, looked: list[str]) -> list[tuple[Path, str]]:
    """The folder candidates for a file name, recording the ones that cannot hold it."""
    places: list[tuple[Path, str]] = []
    md = models_dir()
    if md is None:
        looked.append(f"${ENV_MODELS_DIR}: not set")
    else:
        places.append((md / file, ENV_MODELS_DIR))
    places.append((cache_dir() / file, "cache"))
    return places


def _fix_hint(file: str) -> str:
    return (
        f"Fix: set {ENV_MODELS_DIR} to a folder holding {file} (on this project's machines the shared "
        f"models folder), copy {file} into {cache_dir()}, or run once on a machine with internet."
    )


def resolve(model: str | Path, *, download: bool = True) -> ResolvedWeights:
    """Find the weights for a registry name or a file path (see the module docstring for the order).

    Raises :class:`WeightsNotFound` naming every place looked and the fix, :class:`WeightsChecksumError`
    when a file found for a registry name has the wrong sha256."""
    registry = load_registry()
    text = str(model).strip()
    looked: list[str] = []
    entry = registry.get(text)

    if entry is None:
        p = Path(text).expanduser()
        if p.is_file():
            return _from_path(p, registry)
        looked.append(f"{p.resolve()}: no such file")
        by_file = [e for e in registry.values() if e.file == p.name] if p.name == text else []
        if by_file:
            entry = by_file[0]
        elif p.name == text and p.suffix.lower() in WEIGHT_SUFFIXES:
            # A bare file name not in the registry: look for it in the same folders.
            for cand, _src in _where_places(p.name, looked):
                if cand.is_file():
                    return _from_path(cand, registry)
                looked.append(f"{cand}: no such file")
            raise WeightsNotFound(
                f"Weights file '{text}' not found. Looked in:\n  - " + "\n  - ".join(looked) + "\n" + _fix_hint(p.name),
                looked,
            )
        else:
            known = ", ".join(sorted(registry)) or "none"
            raise WeightsNotFound(
                f"Model '{text}' is neither a registered name (known: {known}) nor an existing .pt/.onnx file "
                f"({p.resolve()} does not exist); set detector.model to one of the names or to a weights path.",
                looked,
            )

    # A registry entry.
    if entry.path:
        p = Path(entry.path)
        if p.is_file():
            return _from_entry(entry, p, "registered", _check_sha(entry, p))
        looked.append(f"{p} (registered path): no such file")
    for cand, src in _where_places(entry.file, looked):
        if cand.is_file():
            return _from_entry(entry, cand, src, _check_sha(entry, cand))
        looked.append(f"{cand}: no such file")
    found = _cached_download(entry, looked)
    if found:
        return found
    if download:
        found = _download(entry, looked)
        if found:
            return found
    else:
        looked.append("download: not attempted (download=False)")
    raise WeightsNotFound(
        f"Weights for model '{entry.name}' ({entry.file}) not found. Looked in:\n  - "
        + "\n  - ".join(looked)
        + "\n"
        + _fix_hint(entry.file),
        looked,
    )


def _from_path(p: Path, registry: dict[str, RegistryEntry]) -> ResolvedWeights:
    fmt = WEIGHT_SUFFIXES.get(p.suffix.lower())
    if fmt is None:
        raise WeightsError(f"{p} is not a .pt, .onnx or OpenVINO .xml weights file; point detector.model at one.")
    sha = sha256_file(p)
    for e in registry.values():
        if e.sha256 == sha:
            return _from_entry(e, p.resolve(), "path", sha)
    return ResolvedWeights(
        path=p.resolve(), name=p.stem, version=f"unregistered-{sha[:12]}", sha256=sha, format=fmt, source="path"
    )


def list_models() -> list[RegistryEntry]:
    return sorted(load_registry().values(), key=lambda e: (e.origin != "builtin", e.name))
