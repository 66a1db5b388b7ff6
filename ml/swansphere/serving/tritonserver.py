"""The real `tritonserver` binary of the nvidia-pytriton wheel, serving a model repository on loopback
(tests, `make up`); production runs the same repository in the official Triton container.

What the wheel needs to run here (ENVIRONMENT.md): the python-backend stub of this interpreter's
version in the backend folder (copied into a private work folder when the wheel's own folder lacks
it; site-packages is never modified), this interpreter's LIBDIR first in LD_LIBRARY_PATH (else the
stub loads the system libpython and dies), and the wheel's bundled libraries after it. PYTHONPATH
names this environment's packages; `triton_model` puts them on the stub's path. pytriton itself is
never imported: only its files are used. The exported configs are complete, so config auto-complete
is off: it would start one more stub per model just to import torch and our package once more.
"""

import contextlib
import importlib.util
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import swansphere
from swansphere.errors import InputError
from swansphere.serving.stages import STAGES
from swansphere.serving.triton_backend import TritonTLS

STUB = "triton_python_backend_stub"
EXIT_TIMEOUT_S = 5
"""How long Triton waits for in-flight requests when stopped."""


def pytriton_dir() -> Path:
    """The `tritonserver` folder of the installed nvidia-pytriton wheel, found without importing it."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("nvidia-pytriton is not installed (it provides the tritonserver binary)")
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


class TritonServer:
    """One tritonserver process: gRPC, HTTP and metrics on 127.0.0.1, explicit model control with
    `models` loaded at start (DESIGN §7), `histogram_latencies` on. The wheel's Triton (2.51) exports
    per-model queue and compute counters (`nv_inference_queue_duration_us`, `..._pending_request_count`)
    for our models; its first-response histogram did not appear for them (not decoupled) when checked."""

    def __init__(
        self,
        repository: str | Path,
        grpc_port: int,
        http_port: int,
        metrics_port: int,
        log_path: str | Path,
        models: Sequence[str] = STAGES,
        tls: TritonTLS | None = None,
    ):
        """With `tls`, gRPC is mutual TLS (this side's pair is the server's; clients must present a
        certificate from `tls.ca`); HTTP and metrics stay on 127.0.0.1 for probes."""
        self.repository = Path(repository).resolve()
        self.grpc_port, self.http_port, self.metrics_port = grpc_port, http_port, metrics_port
        self.log_path = Path(log_path)
        self.models = tuple(models)
        self.tls = tls
        self._process: subprocess.Popen | None = None
        self._work_dir: Path | None = None

    @property
    def url(self) -> str:
        """gRPC address for `tritonclient.grpc` and `TritonBackend`."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (for pid files)."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """False once the process has exited (a supervisor restarts it with stop() then start())."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the server and wait until it and every model in `models` are ready; RuntimeError
        (with the log's tail) if it exits or is not ready in time."""
        if not self.repository.is_dir():
            raise InputError(f"{self.repository}: no such model repository")
        if self._process is not None:
            raise RuntimeError(f"tritonserver already started (pid {self._process.pid})")
        dist = pytriton_dir()
        self._work_dir = Path(tempfile.mkdtemp(prefix="swansphere-triton-"))
        command = [
            str(dist / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._backend_dir(dist)}",
            "--model-control-mode=explicit",
            *(f"--load-model={name}" for name in self.models),
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--metrics-config=histogram_latencies=true",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            "--disable-auto-complete-config",
            *self._tls_args(),
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command, env=self._env(dist), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 30.0) -> None:
        """Terminate the server (it unloads the models and their stubs), kill what is left of its
        process group, and remove the work folder. A server that was killed (SIGKILL, the OOM killer)
        leaves its python-backend stubs running, each holding its model (1 GB for a tiny one): after
        a test killed Triton, two of them were still up half an hour later."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            with contextlib.suppress(ProcessLookupError):  # none left: the usual case
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the group is its pid
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None

    def __enter__(self) -> "TritonServer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _backend_dir(self, dist: Path) -> Path:
        """The wheel's backend folder if it has this interpreter's stub, else a private copy with it."""
        backends = dist / "backends"
        if (backends / "python" / STUB).is_file():
            return backends
        assert self._work_dir is not None
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = dist / "python_backend_stubs" / version / STUB
        if not stub.is_file():
            raise InputError(f"nvidia-pytriton has no python backend stub for Python {version} ({stub})")
        private = self._work_dir / "backends"
        shutil.copytree(backends, private, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub, private / "python" / STUB)
        return private

    def _env(self, dist: Path) -> dict[str, str]:
        env = dict(os.environ)
        libs = [sysconfig.get_config_var("LIBDIR"), str(dist.parent.parent / "nvidia_pytriton.libs")]
        packages = [str(Path(swansphere.__file__).parent.parent), *site.getsitepackages()]
        for name, entries in (("LD_LIBRARY_PATH", libs), ("PYTHONPATH", packages)):
            env[name] = os.pathsep.join([*entries, *filter(None, [os.environ.get(name)])])
        return env

    def _wait_ready(self, timeout_s: float) -> None:
        """Polls with a fresh client each time: a gRPC channel that found the port closed backs off
        for up to seconds before it tries again."""
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with code {self._process.returncode}:\n{self._log_tail()}"
                )
            if self._models_ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"tritonserver not ready within {timeout_s:g} s:\n{self._log_tail()}")

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            "--grpc-use-ssl=true",
            "--grpc-use-ssl-mutual=true",
            f"--grpc-server-cert={self.tls.cert}",
            f"--grpc-server-key={self.tls.key}",
            f"--grpc-root-cert={self.tls.ca}",
        ]

    def _models_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1.0):
                pass
        except OSError:
            return False
        try:
            options = self.tls.client_options() if self.tls is not None else {}
            with grpcclient.InferenceServerClient(self.url, **options) as client:
                return client.is_server_ready(client_timeout=1.0) and all(
                    client.is_model_ready(name, client_timeout=1.0) for name in self.models
                )
        except InferenceServerException:
            return False

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no log at {self.log_path})"
