"""Evidence store on S3-compatible object storage (MinIO, AWS S3, ...) with the ``minio`` client.

Keys are the same as in the local store (``events/<event_id>/<role file>``). Every put is verified by
hash: it carries ``x-amz-checksum-sha256`` (the server recomputes it where it implements checksums) and the
object's sha256 as metadata, and the returned ETag must be the MD5 of the bytes sent; a retried put of the
same bytes is skipped (no second object version). Object retention (object lock) is set by the sealer
through :meth:`S3Store.retain` where the bucket has object lock; servers without it are told apart once
and get a warning, not an error.

Credentials come from the environment variables named in the config; they never appear in a log line,
an exception or ``repr``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.commonconfig import COMPLIANCE, GOVERNANCE
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.retention import Retention

from nonsite.config.services import S3Config
from nonsite.evidence.local import check_key
from nonsite.evidence.store import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")
_MIN_PART = 5 * 1024 * 1024
_NOT_FOUND = {"NoSuchKey", "NoSuchObject", "NotFound", "NoSuchVersion"}
_NO_LOCK = {"ObjectLockConfigurationNotFoundError", "NotImplemented", "MethodNotAllowed", "InvalidRequest",
            "XNotImplemented", "NoSuchObjectLockConfiguration"}
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError, ServerError, InvalidResponseError)


def _split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    e = endpoint.strip()
    if e.startswith("https://"):
        return e[len("https://"):].rstrip("/"), True
    if e.startswith("http://"):
        return e[len("http://"):].rstrip("/"), False
    return e.rstrip("/"), secure


class S3Store:
    """A :class:`~nonsite.evidence.store.Store` in one bucket of an S3-compatible server.

    Constructing it contacts nobody: the bucket is checked (and created, with object lock when configured)
    on first use, so an edge starts while the store is down and spools meanwhile.
    """

    def __init__(self, cfg: S3Config) -> None:
        self.cfg = cfg
        self.endpoint, self.secure = _split_endpoint(cfg.endpoint, cfg.secure)
        if not self.endpoint:
            raise StoreError("evidence.s3.endpoint is empty; set it (host:port) or export NONSITE_S3_ENDPOINT")
        access = os.environ.get(cfg.access_key_env, "")
        secret = os.environ.get(cfg.secret_key_env, "")
        if not access or not secret:
            raise StoreError(
                f"the S3 credentials are not set: export {cfg.access_key_env} and {cfg.secret_key_env} "
                "(evidence.s3.access_key_env / secret_key_env name other variables)"
            )
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=cfg.timeout_s, read=cfg.timeout_s),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
            maxsize=16,
        )
        self._client = Minio(self.endpoint, access_key=access, secret_key=secret, secure=self.secure,
                             region=cfg.region, http_client=http)
        self.bucket = cfg.bucket
        self._ready = False
        self._ready_lock = threading.Lock()
        self._lock_supported: bool | None = None

    def __repr__(self) -> str:  # never the credentials
        return f"S3Store({'https' if self.secure else 'http'}://{self.endpoint}/{self.bucket})"

    # -- plumbing --------------------------------------------------------------------------------------

    def _error(self, verb: str, what: str, e: BaseException) -> StoreError:
        detail = f"{e.code}: {e.message}" if isinstance(e, S3Error) else f"{type(e).__name__}: {e}"
        return StoreError(f"cannot {verb} {what} in {self!r}: {detail}")

    def _call(self, verb: str, what: str, fn: Callable[[], T]) -> T:
        self.ensure_bucket()
        try:
            return fn()
        except S3Error as e:
            if e.code in _NOT_FOUND:
                raise KeyError(what) from None
            raise self._error(verb, what, e) from None
        except (*_TRANSPORT_ERRORS, MinioException) as e:
            raise self._error(verb, what, e) from None

    def ensure_bucket(self) -> None:
        """Create the bucket when missing (with object lock when configured); find out whether it has a lock."""
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            try:
                if not self._client.bucket_exists(self.bucket):
                    try:
                        self._client.make_bucket(self.bucket, location=self.cfg.region,
                                                 object_lock=self.cfg.object_lock)
                        log.info("created bucket %s (object lock %s)", self.bucket, self.cfg.object_lock)
                    except S3Error as e:
                        if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                            raise
                self._lock_supported = self._probe_lock()
            except S3Error as e:
                raise self._error("open bucket", self.bucket, e) from None
            except (*_TRANSPORT_ERRORS, MinioException) as e:
                raise self._error("reach bucket", self.bucket, e) from None
            if self.cfg.object_lock and not self._lock_supported:
                log.warning("%r has no object lock (the server or the bucket does not support it): sealed evidence "
                            "gets no retention there; its signature still shows any change", self)
            self._ready = True

    def _probe_lock(self) -> bool:
        try:
            conf = self._client.get_object_lock_config(self.bucket)
        except S3Error as e:
            if e.code in _NO_LOCK:
                return False
            raise
        except (ValueError, KeyError, AttributeError):  # a server answering with something unparseable
            return False
        return conf is not None

    @property
    def lock_supported(self) -> bool:
        """True when the bucket has object lock (so :meth:`retain` sets retention)."""
        self.ensure_bucket()
        return bool(self._lock_supported)

    def _head(self, key: str) -> Any | None:
        try:
            return self._call("read", key, lambda: self._client.stat_object(self.bucket, key))
        except KeyError:
            return None

    # -- the Store protocol ----------------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write ``data`` under ``key`` (timed: nonsite_evidence_write_seconds{store="s3"})."""
        from nonsite.evidence.metrics import WRITE_SECONDS

        with WRITE_SECONDS.labels(store="s3").time():
            self._put(key, data, content_type)

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        """Write ``data`` under ``key``, verified by hash; an identical retry is skipped."""
        check_key(key)
        digest = hashlib.sha256(data).digest()
        sha = digest.hex()
        head = self._head(key)
        if head is not None and head.size == len(data) and _meta(head, "sha256") == sha:
            return
        metadata = {"sha256": sha, "x-amz-checksum-sha256": base64.b64encode(digest).decode("ascii")}
        result = self._call("write", key, lambda: self._client.put_object(
            self.bucket, key, io.BytesIO(data), len(data), content_type=content_type or "application/octet-stream",
            metadata=metadata, part_size=max(_MIN_PART, len(data)),
        ))
        etag = (result.etag or "").strip('"')
        if len(etag) == 32 and "-" not in etag and etag != hashlib.md5(data, usedforsecurity=False).hexdigest():
            raise StoreError(f"{self!r} stored different bytes under {key!r} (ETag {etag} is not the MD5 of what "
                             "was sent); the write will be retried")

    def get(self, key: str) -> bytes:
        check_key(key)

        def read() -> bytes:
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call("read", key, read)

    def exists(self, key: str) -> bool:
        check_key(key)
        return self._head(key) is not None

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key that starts with ``prefix``, sorted."""
        keys = self._call("list", prefix or "(all)", lambda: sorted(
            o.object_name for o in self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
            if o.object_name and not o.is_dir
        ))
        return iter(keys)

    def delete(self, key: str) -> None:
        """Remove ``key`` with every stored version of it; absent is not an error.

        A version under retention cannot be removed: StoreError names the date it is locked until.
        """
        check_key(key)
        versions: list[str | None] = list(self.versions(key)) or [None]
        for version in versions:
            try:
                self._call("delete", key, lambda v=version: self._client.remove_object(self.bucket, key, version_id=v))
            except KeyError:
                continue
            except StoreError as e:
                held = self.retention(key)
                if held is not None and held[1] > datetime.now(UTC):
                    raise StoreError(f"cannot delete {key!r}: it is under {held[0].lower()} retention until "
                                     f"{held[1].isoformat()}") from None
                raise e from None

    # -- beyond the protocol: links and retention ------------------------------------------------------

    def url(self, key: str, expires_s: int | None = None) -> str:
        """A presigned GET link to ``key`` that expires after ``expires_s`` (default evidence.s3.presign_expiry_s)."""
        check_key(key)
        seconds = int(expires_s or self.cfg.presign_expiry_s)
        return self._call("sign a link to", key, lambda: self._client.presigned_get_object(
            self.bucket, key, expires=timedelta(seconds=max(1, seconds))))

    def retain(self, key: str, until: datetime, mode: str = "compliance") -> bool:
        """Set object retention on ``key`` until ``until``; False when the bucket has no object lock.

        A retention already in force until a later date is left as it is (compliance mode cannot be
        shortened, and is not). KeyError when ``key`` does not exist.
        """
        if not self.lock_supported:
            return False
        until = until.astimezone(UTC).replace(microsecond=0)
        lock_mode = COMPLIANCE if mode == "compliance" else GOVERNANCE
        try:
            self._call("set retention on", key, lambda: self._client.set_object_retention(
                self.bucket, key, Retention(lock_mode, until)))
            return True
        except StoreError as e:  # refused: a longer lock already in force, or no such key
            head = self._head(key)
            if head is None:
                raise KeyError(key) from None
            held = _retention_of(head)
            if held is not None and held[1] >= until:
                return True
            raise e from None

    def retention(self, key: str) -> tuple[str, datetime] | None:
        """(mode, retain-until) of ``key``'s current version, or None when it has none (read from HEAD)."""
        head = self._head(key)
        return None if head is None else _retention_of(head)

    def versions(self, key: str) -> list[str | None]:
        """Version ids of ``key``, newest first; ``[None]`` where the bucket keeps no versions (or the server
        cannot list them) and the key exists; ``[]`` when it does not."""
        self.ensure_bucket()
        try:
            return [o.version_id for o in self._client.list_objects(self.bucket, prefix=key, include_version=True)
                    if o.object_name == key]
        except S3Error as e:
            if e.code not in _NO_LOCK:  # MethodNotAllowed / NotImplemented: no versioning on this server
                raise self._error("list versions of", key, e) from None
        except (*_TRANSPORT_ERRORS, MinioException) as e:
            raise self._error("list versions of", key, e) from None
        return [None] if self.exists(key) else []


def _retention_of(head: Any) -> tuple[str, datetime] | None:
    headers = {k.lower(): v for k, v in (head.metadata or {}).items()}
    mode = headers.get("x-amz-object-lock-mode")
    until = headers.get("x-amz-object-lock-retain-until-date")
    if not mode or not until:
        return None
    try:
        when = datetime.fromisoformat(until.replace("Z", "+00:00"))
    except ValueError:
        return None
    return mode.upper(), when.astimezone(UTC)


def _meta(head: Any, name: str) -> str | None:
    meta = {k.lower(): v for k, v in (head.metadata or {}).items()}
    return meta.get(f"x-amz-meta-{name}")
