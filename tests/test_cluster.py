"""End to end on the local cluster (`make up`): Redis, Kafka protocol (Tansu), S3 (moto), MLflow,
Triton and the five services as real processes; a SynthSphere clip streamed through the gateway
gives the embedded pipeline's FOA for the same checkpoint and seed."""

import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from helpers_model import tiny_model

from services import local_cluster
from swansphere.bench import BenchSettings, run_service_bench
from swansphere.checkpoint import load_checkpoint, save_checkpoint
from swansphere.client import SwanSphereClient
from swansphere.engine import GenerationSettings, generate
from swansphere.synth import SynthConfig, generate_clip

pytestmark = pytest.mark.servers

STEPS = 4


def free_base_port() -> int:
    """A base port with the 26 ports of the cluster free."""
    rng = np.random.default_rng()
    for _ in range(50):
        base = int(rng.integers(20_000, 60_000))
        try:
            sockets = []
            for port in range(base, base + 26):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free block of 26 ports")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    checkpoint = run_dir / "model.safetensors"
    save_checkpoint(tiny_model(), checkpoint)
    address = local_cluster.up(run_dir, free_base_port(), str(checkpoint))
    try:
        yield address, run_dir, load_checkpoint(checkpoint)
    finally:
        local_cluster.down(run_dir)
        assert not list(run_dir.glob("*.pid"))


@pytest.fixture(scope="module")
def clip():
    """A 3 s SynthSphere clip at 128x64."""
    return generate_clip(SynthConfig(seconds=3.0, width=128, max_sources=1), index=0, seed=5)


def stream(address: str, frames: np.ndarray, seed: int) -> list:
    with SwanSphereClient(address, timeout_s=120) as client:
        return list(client.generate(frames, seed=seed, steps=STEPS, frames_per_message=2))


def test_a_streamed_clip_equals_embedded_mode(cluster, clip):
    address, run_dir, model = cluster
    with SwanSphereClient(address, timeout_s=120) as client:
        generation = client.generate(clip.frames, seed=11, steps=STEPS, frames_per_message=2)
        chunks = list(generation)
    sha256 = hashlib.sha256((run_dir / "model.safetensors").read_bytes()).hexdigest()
    assert generation.summary.model == f"model.safetensors sha256:{sha256[:12]}"
    assert [c.patch_index for c in chunks] == list(range(len(chunks)))
    audio = np.concatenate([c.audio for c in chunks], axis=-1)
    expected = generate(model, clip.frames, settings=GenerationSettings(seed=11, steps=STEPS))
    assert audio.shape == expected.shape
    print(f"\nservice vs embedded: max |diff| = {np.max(np.abs(audio - expected)):.2e}")
    assert np.max(np.abs(audio - expected)) <= 1e-4
    assert (run_dir / "gateway.addr").read_text().strip() == address
    for name in ("redis", "kafka", "s3", "mlflow", "triton", "gateway", *local_cluster.STAGE_SERVICES):
        assert (run_dir / f"{name}.pid").exists() and (run_dir / f"{name}.log").exists()


def test_four_concurrent_streams_each_get_their_own_audio(cluster, clip):
    address, _, model = cluster
    results: dict[int, list] = {}
    frames = clip.frames[:8]

    def run(seed: int) -> None:
        results[seed] = stream(address, frames, seed)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert sorted(results) == [0, 1, 2, 3]
    for seed, chunks in results.items():
        assert [c.patch_index for c in chunks] == list(range(len(chunks)))
        audio = np.concatenate([c.audio for c in chunks], axis=-1)
        expected = generate(model, frames, settings=GenerationSettings(seed=seed, steps=STEPS))
        assert np.max(np.abs(audio - expected)) <= 1e-4


def stream_while_killing(
    address: str,
    frames: np.ndarray,
    seed: int,
    pid_file: Path,
    retries: int | None = None,
    realtime: bool = False,
) -> tuple[list, list[Exception], bool]:
    """Streams `frames` (long enough to be still running when the kill lands; `realtime`: at 4 fps)
    and SIGKILLs the process in `pid_file` once 3 chunks came; returns the chunks, the call's errors
    and whether the call was still running 240 s later."""
    chunks: list = []
    errors: list[Exception] = []
    options = {} if retries is None else {"retries": retries}

    def run() -> None:
        try:
            with SwanSphereClient(address, timeout_s=240, **options) as client:
                chunks.extend(
                    client.generate(frames, seed=seed, steps=STEPS, frames_per_message=2, realtime=realtime)
                )
        except Exception as err:
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while len(chunks) < 3 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    thread.join(timeout=240)
    return chunks, errors, thread.is_alive()


@pytest.mark.parametrize(
    "stage",
    [
        "video_encoder",
        "spatial_lm",
        "locdit",
        "vae_decoder",
    ],
)
def test_a_stage_killed_mid_stream_loses_no_chunk(cluster, clip, stage):
    """SIGKILL a stage while a stream runs: the supervisor restarts it, Redis hands the dead worker's
    unacked messages to the new one (XAUTOCLAIM), and the client still gets every chunk once, in order,
    with the embedded audio."""
    address, run_dir, model = cluster
    frames = np.concatenate([clip.frames] * 4)
    old = int((run_dir / f"{stage}.pid").read_text())
    chunks, errors, hung = stream_while_killing(address, frames, seed=21, pid_file=run_dir / f"{stage}.pid")
    assert not hung and not errors, errors
    assert len(chunks) == 65
    restarted = time.monotonic() + 60
    while int((run_dir / f"{stage}.pid").read_text()) == old and time.monotonic() < restarted:
        time.sleep(0.2)
    assert int((run_dir / f"{stage}.pid").read_text()) != old, "the supervisor did not restart the stage"
    local_cluster.wait_serving(address, 120.0)  # the next test starts with every stage back
    assert [c.patch_index for c in chunks] == list(range(len(chunks)))
    audio = np.concatenate([c.audio for c in chunks], axis=-1)
    expected = generate(model, frames, settings=GenerationSettings(seed=21, steps=STEPS))
    assert audio.shape == expected.shape
    assert np.max(np.abs(audio - expected)) <= 1e-4


def test_triton_killed_mid_stream_loses_no_chunk(cluster, clip):
    """SIGKILL Triton while a stream runs: the stages back off until the supervisor has it back, its
    models come back without the stream's states, so the video-encoder stage sends the next frames
    again with their context (`VideoStateLostError`) and the LM replays the stream
    (`LMStateLostError`); the client still gets every chunk once, in order, with the embedded audio."""
    address, run_dir, model = cluster
    frames = np.concatenate([clip.frames] * 4)  # 12 s at 4 fps: frames still come after the restart
    pid_file = run_dir / "triton.pid"
    old = int(pid_file.read_text())
    chunks, errors, hung = stream_while_killing(address, frames, seed=22, pid_file=pid_file, realtime=True)
    assert not hung and not errors, errors
    assert [c.patch_index for c in chunks] == list(range(65))
    assert int(pid_file.read_text()) != old, "the supervisor did not restart Triton"
    deadline = time.monotonic() + 10
    while running_in_group(old) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running_in_group(old), "the killed server's model stubs outlived it"
    local_cluster.wait_serving(address, 240.0)
    audio = np.concatenate([c.audio for c in chunks], axis=-1)
    expected = generate(model, frames, settings=GenerationSettings(seed=22, steps=STEPS))
    assert np.max(np.abs(audio - expected)) <= 1e-4


def running_in_group(pgid: int) -> list[int]:
    """The processes of group `pgid` that still run; zombies, which only wait to be reaped by an
    init that may never do it, do not count."""
    running = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError):  # the process ended meanwhile
            continue
        if int(group) == pgid and state != "Z":
            running.append(int(stat.parent.name))
    return running


def test_terminate_kills_what_a_dead_leader_left_of_its_group():
    """The supervisor's stop and restart path: a process killed on its own leaves its children, and
    `_terminate` still takes them (the twin of TritonServer.stop's stubs)."""
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    deadline = time.monotonic() + 10
    while len(running_in_group(leader.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(running_in_group(leader.pid)) == 3
    os.kill(leader.pid, signal.SIGKILL)
    leader.wait()
    assert len(running_in_group(leader.pid)) == 2  # the two sleeps outlived their leader
    local_cluster._terminate(leader)
    deadline = time.monotonic() + 10
    while running_in_group(leader.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running_in_group(leader.pid)


def test_redis_killed_mid_stream_comes_back_from_its_append_only_file(cluster, clip):
    """SIGKILL Redis while a stream runs: the supervisor restarts it on its append-only file, and the
    stream either completes with the embedded audio or ends with a retryable UNAVAILABLE, never a
    hang; the next stream is served as before."""
    address, run_dir, model = cluster
    frames = np.concatenate([clip.frames] * 4)
    chunks, errors, hung = stream_while_killing(
        address, frames, seed=22, pid_file=run_dir / "redis.pid", retries=0
    )
    assert not hung, "the stream hung after Redis came back"
    assert all(isinstance(err, grpc.RpcError) for err in errors), errors
    outcome = f"ended with {errors[0].code().name}" if errors else f"completed: {len(chunks)} chunks"
    print(f"Redis SIGKILLed mid-stream: the stream {outcome}")
    if errors:
        assert [err.code() for err in errors] == [grpc.StatusCode.UNAVAILABLE]
    else:
        audio = np.concatenate([c.audio for c in chunks], axis=-1)
        expected = generate(model, frames, settings=GenerationSettings(seed=22, steps=STEPS))
        assert [c.patch_index for c in chunks] == list(range(65))
        assert np.max(np.abs(audio - expected)) <= 1e-4
    local_cluster.wait_serving(address, 120.0)
    after = stream(address, clip.frames[:4], seed=3)
    expected = generate(model, clip.frames[:4], settings=GenerationSettings(seed=3, steps=STEPS))
    assert np.max(np.abs(np.concatenate([c.audio for c in after], axis=-1) - expected)) <= 1e-4


SOAK_S = float(os.environ.get("SWANSPHERE_SOAK_S", "90"))
"""How long the soak test keeps the streams going (CI: 90 s; a longer local soak: set it)."""
SOAK_RSS_GROWTH_MB = 60.0
"""Bound on any service process's resident-memory growth over the soak."""


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_soak_four_streams_without_errors_or_memory_growth(cluster, clip):
    """Four clients stream 2 s clips back to back for SOAK_S seconds: zero errors, every stream's
    audio complete, and no gateway or stage process grows by more than SOAK_RSS_GROWTH_MB."""
    address, run_dir, _ = cluster
    services = ["gateway", "video_encoder", "spatial_lm", "locdit", "vae_decoder"]
    pids = {name: int((run_dir / f"{name}.pid").read_text()) for name in services}
    stream(address, clip.frames[:8], seed=1)  # warm: every stage has served once
    before = {name: resident_mb(pid) for name, pid in pids.items()}
    stop_at = time.monotonic() + SOAK_S
    counts = {"streams": 0, "errors": 0, "short": 0}
    lock = threading.Lock()

    def client_loop(worker: int) -> None:
        with SwanSphereClient(address, timeout_s=120, retries=0) as client:
            while time.monotonic() < stop_at:
                try:
                    chunks = list(client.generate(clip.frames[:8], seed=worker, steps=STEPS))
                    short = sum(c.audio.shape[-1] for c in chunks) != 2 * 44100
                    with lock:
                        counts["streams"] += 1
                        counts["short"] += short
                except grpc.RpcError:
                    with lock:
                        counts["errors"] += 1

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SOAK_S + 180)
    after = {name: resident_mb(pid) for name, pid in pids.items()}
    growth = {name: round(after[name] - before[name], 1) for name in services}
    print(f"soak: {counts['streams']} streams in {SOAK_S:.0f} s, {counts['errors']} errors, RSS MB +{growth}")
    assert not any(thread.is_alive() for thread in threads)
    assert counts["streams"] >= 4 and counts["errors"] == 0 and counts["short"] == 0
    assert {name: int((run_dir / f"{name}.pid").read_text()) for name in services} == pids, (
        "a service restarted"
    )
    assert max(growth.values()) <= SOAK_RSS_GROWTH_MB, growth


def test_triton_down_makes_the_gateway_unavailable_until_it_returns(cluster, clip):
    """Triton SIGKILLed: the stages report NOT_SERVING, the gateway answers UNAVAILABLE (retryable),
    and once the supervisor has Triton back the same request succeeds."""
    address, run_dir, model = cluster
    os.kill(int((run_dir / "triton.pid").read_text()), signal.SIGKILL)
    codes = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and grpc.StatusCode.UNAVAILABLE not in codes:
        with SwanSphereClient(address, timeout_s=10, retries=0) as client:
            try:
                list(client.generate(clip.frames[:2], seed=3, steps=STEPS))
            except grpc.RpcError as err:
                codes.add(err.code())
        time.sleep(0.2)
    assert grpc.StatusCode.UNAVAILABLE in codes
    local_cluster.wait_serving(address, 240.0)
    chunks = stream(address, clip.frames[:4], seed=3)
    expected = generate(model, clip.frames[:4], settings=GenerationSettings(seed=3, steps=STEPS))
    assert np.max(np.abs(np.concatenate([c.audio for c in chunks], axis=-1) - expected)) <= 1e-4


def test_the_service_benchmark_reports_service_against_embedded(cluster):
    """`swansphere bench --target`: figures only (never timing thresholds)."""
    address, _, _ = cluster
    report = run_service_bench(address, BenchSettings(seconds=1.0, steps=2, streams=2))
    for section in ("service", "embedded"):
        assert all(
            report[section][key] > 0 for key in ("time_to_first_chunk_s", "real_time_factor", "per_patch_s")
        )
    assert report["patches"] == 6 and report["rounds"] == 3 and report["concurrency"]["streams"] == 2
    live = report["concurrency"]["live"]
    assert live["time_to_first_chunk_p99_s"] >= live["time_to_first_chunk_p50_s"] > 0
    assert isinstance(report["added_per_patch_s"], float)
