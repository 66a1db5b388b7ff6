"""Model compute in Triton (DESIGN §2, §7): the exported repository, served by the real tritonserver,
computes what TorchBackend computes; the spatial LM's per-stream state is lost and replayed cleanly;
LocDiT and the decoder batch across callers; a tampered checkpoint refuses to load; `swansphere
export`; and the whole pipeline over Triton equals embedded generation."""

import hashlib
import json
import shutil
import threading
import time

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from conftest import free_port
from helpers_model import step_one, tiny_model
from helpers_tls import write_certificate
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from tritonclient.utils import InferenceServerException

from swansphere import storage
from swansphere.checkpoint import load_checkpoint, read_metadata
from swansphere.cli import main
from swansphere.engine import GenerationSettings, generate
from swansphere.errors import InputError
from swansphere.models.sampler import Guidance
from swansphere.models.vae import decoder_context_frames
from swansphere.serving.backend import (
    FrameWindow,
    LMStateLostError,
    LMStep,
    TorchBackend,
    VideoStateLostError,
)
from swansphere.serving.embedded import EmbeddedPipeline
from swansphere.serving.session import StreamSession
from swansphere.serving.stages import STAGES, StreamSpec
from swansphere.serving.triton_backend import TritonBackend, TritonTLS, TritonUnavailableError
from swansphere.serving.triton_export import (
    CHECKPOINT_FILE,
    checkpoint_path,
    export_repository,
    read_repository,
)
from swansphere.serving.tritonserver import TritonServer

pytestmark = pytest.mark.servers
TEXT = "a dog barks on the left"


@pytest.fixture(scope="module")
def torch_backend(triton_repository):
    return TorchBackend(load_checkpoint(triton_repository / CHECKPOINT_FILE))


@pytest.fixture(scope="module")
def triton(triton_server, triton_repository):
    backend = TritonBackend(triton_server.url, read_repository(triton_repository).config)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def sizes(torch_backend):
    """P, D, Dv, C, context frames of the tiny model."""
    c = torch_backend.config
    return c.patch_frames, c.vae.latent_dim, c.svac.proj_dim, c.lm.d_model, c.locdit.context_frames


def normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def assert_close(a, b, tolerance=1e-5):
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) <= tolerance


def test_server_and_models_are_ready(triton):
    assert triton.ready()


def test_video_encoder_equals_torch_batched_across_streams(triton, torch_backend):
    windows = np.random.default_rng(0).integers(0, 256, (10, 3, 3, 64, 128), dtype=np.uint8)
    tokens = np.stack(triton.video_encoder(windows))  # more windows than max_batch_size 8: two requests
    assert tokens.shape[:2] == (10, 3)
    assert_close(tokens, np.stack(torch_backend.video_encoder(windows)))
    assert_close(tokens[2], torch_backend.video_encoder(windows[2:3])[0])  # rows do not mix


def test_video_encoder_keeps_each_streams_state(triton, torch_backend):
    """The model keeps a stream's encoder state between requests: the next window's context pixels
    are not read (zeros there), a resumed window of new frames alone goes on from it, and a resumed
    window of a stream the model does not know comes back in LOST without failing its neighbour."""
    video = torch_backend.config.svac.video
    clip = np.random.default_rng(4).integers(0, 256, (1, 11, 3, *video.frame_size), dtype=np.uint8)
    whole = torch_backend.video_encoder(clip)[0]
    first = triton.video_encoder(clip[:, :5], [FrameWindow("kept", 0)])
    blank = clip[:, 1:9].copy()
    blank[:, :4] = 0
    rest = triton.video_encoder(blank, [FrameWindow("kept", 1, 4)])
    new = clip[:, 9:].repeat(2, axis=0)
    resumed, lost = triton.video_encoder(
        new, [FrameWindow("kept", 9, resume=True), FrameWindow("never seen", 9, resume=True)]
    )
    assert_close(np.concatenate([first[0], rest[0], resumed]), whole)
    assert isinstance(lost, VideoStateLostError) and "never seen has no state at frame 9" in str(lost)


def test_spatial_lm_stepping_patch_by_patch_equals_torch(triton, torch_backend, sizes):
    P, D, Dv, _, _ = sizes
    rng = np.random.default_rng(1)
    video, latents = normal(rng, 4, P, Dv), normal(rng, 3, D, P)
    none = np.zeros((0, D, P), np.float32)
    results = {}
    for name, backend in (("triton", triton), ("torch", torch_backend)):
        hs = [step_one(backend, "steps", 0, video[:1], none, TEXT)]
        hs += [step_one(backend, "steps", t, video[t : t + 1], latents[t - 1 : t], TEXT) for t in (1, 2, 3)]
        # text-only stream (null video), no text either: the null embeddings
        hs += [step_one(backend, "text-only", 0, None, none, None)]
        hs += [step_one(backend, "text-only", 1, None, latents[:1], None)]
        results[name] = np.concatenate(hs)
    assert results["triton"].shape == (6, sizes[3])
    assert_close(results["triton"], results["torch"])
    triton.end_stream("steps")
    with pytest.raises(LMStateLostError, match="no state"):
        step_one(triton, "steps", 4, video[:1], latents[:1], TEXT)


def test_lost_lm_state_raises_and_a_replay_from_patch_zero_continues(triton, torch_backend, sizes):
    P, D, Dv, _, _ = sizes
    rng = np.random.default_rng(2)
    video, latents = normal(rng, 4, P, Dv), normal(rng, 3, D, P)
    with pytest.raises(LMStateLostError, match="asked for patch 2"):
        step_one(triton, "unknown", 2, video[2:3], latents[1:2], TEXT)
    replayed = step_one(triton, "unknown", 0, video[:3], latents[:2], TEXT)
    expected = step_one(torch_backend, "unknown", 0, video[:3], latents[:2], TEXT)
    assert_close(replayed, expected)
    with pytest.raises(LMStateLostError, match="state at patch 3"):
        step_one(triton, "unknown", 1, video[1:2], latents[:1], TEXT)
    after = step_one(triton, "unknown", 3, video[3:], latents[2:], TEXT)
    assert_close(after, step_one(torch_backend, "unknown", 3, video[3:], latents[2:], TEXT))
    triton.end_stream("unknown")


def test_one_request_steps_several_streams_and_names_the_lost_one(triton, torch_backend, sizes):
    """The LM stage's call: streams at different patches (one new, one text-only, one unknown to the
    server) in one request; each gets what torch gives it alone, the unknown one is named in LOST."""
    P, D, Dv, C, _ = sizes
    rng = np.random.default_rng(3)
    video, latents = normal(rng, 3, P, Dv), normal(rng, 2, D, P)
    none = np.zeros((0, D, P), np.float32)
    step_one(triton, "batch-a", 0, video[:2], latents[:1], TEXT)
    steps = [
        LMStep("batch-a", 2, video[2:], latents[1:], TEXT),
        LMStep("batch-b", 0, None, none, None),
        LMStep("batch-lost", 5, video[:1], latents[:1], TEXT),
        LMStep("batch-c", 0, video[:2], latents[:1], "wind"),
    ]
    results = triton.spatial_lm(steps)
    assert isinstance(results[2], LMStateLostError) and "no state" in str(results[2])
    step_one(torch_backend, "batch-a", 0, video[:2], latents[:1], TEXT)
    for step, result in zip(steps, results, strict=True):
        if step.stream_id != "batch-lost":
            assert result.shape == (step.patches, C)
            expected = step_one(
                torch_backend, step.stream_id, step.first_patch, step.video, step.previous, step.text
            )
            assert_close(result, expected)
    for stream in ("batch-a", "batch-b", "batch-c"):
        triton.end_stream(stream)
        torch_backend.end_stream(stream)


def test_locdit_and_decoder_equal_torch_beyond_one_max_batch(triton, torch_backend, sizes):
    P, D, _, C, context_frames = sizes
    rng = np.random.default_rng(3)
    B = 11  # the model's max batch is 8: two requests
    args = (normal(rng, B, C), normal(rng, B, D, context_frames), list(range(B)), [i % 4 for i in range(B)])
    guidance = Guidance(1.5, 0.5)
    z = triton.locdit(*args, 3, guidance)
    assert z.shape == (B, D, P)
    assert_close(z, torch_backend.locdit(*args, 3, guidance))
    windows = normal(rng, B, D, decoder_context_frames(torch_backend.config.vae) + P)
    audio = triton.vae_decoder(windows)
    assert audio.shape == (B, 4, torch_backend.config.patch_samples)
    assert_close(audio, torch_backend.vae_decoder(windows))


def run_concurrently(jobs):
    """Runs the callables at once (released together by a barrier); returns their results in order."""
    barrier, results, errors = threading.Barrier(len(jobs)), [None] * len(jobs), []

    def run(i):
        barrier.wait()
        try:
            results[i] = jobs[i]()
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def locdit_statistics(triton_server, rows):
    """(rows served, model executions) of locdit once `rows` rows are counted and the counts hold still:
    Triton counts a request shortly after answering it."""
    deadline, last = time.monotonic() + 10.0, None
    with grpcclient.InferenceServerClient(triton_server.url) as client:
        while time.monotonic() < deadline:
            stats = client.get_inference_statistics("locdit").model_stats[0]
            counts = stats.inference_count, stats.execution_count
            if counts == last and counts[0] >= rows:
                return counts
            last = counts
            time.sleep(0.2)
    raise AssertionError(f"locdit statistics did not settle: {last}")


def test_concurrent_locdit_requests_of_many_streams_share_batches(
    triton, torch_backend, triton_server, sizes
):
    """Single-patch requests of 8 callers, two solver settings: each gets its own patch back, and Triton
    ran fewer model executions than it served rows (cross-stream batching)."""
    _, D, _, C, context_frames = sizes
    rng = np.random.default_rng(4)
    rows = [
        (normal(rng, 1, C), normal(rng, 1, D, context_frames), [100 + k], [k], 2 + k % 2) for k in range(8)
    ]
    before = locdit_statistics(triton_server, 0)
    results = run_concurrently([lambda r=r: triton.locdit(*r, Guidance()) for r in rows])
    after = locdit_statistics(triton_server, before[0] + len(rows))
    inferences, executions = after[0] - before[0], after[1] - before[1]
    for row, z in zip(rows, results, strict=True):
        assert_close(z, torch_backend.locdit(*row, Guidance()))
    assert inferences == 8
    assert executions < inferences


def test_concurrent_decoder_requests_of_different_window_lengths(triton, torch_backend, sizes):
    P, D, _, _, _ = sizes
    rng = np.random.default_rng(5)
    full = decoder_context_frames(torch_backend.config.vae) + P
    windows = [normal(rng, 2, D, length) for length in (P, full, 2 * P, full)]
    results = run_concurrently([lambda w=w: triton.vae_decoder(w) for w in windows])
    for window, audio in zip(windows, results, strict=True):
        assert_close(audio, torch_backend.vae_decoder(window))


def test_bad_input_is_an_input_error(triton, sizes):
    P, D, Dv, C, context_frames = sizes
    with pytest.raises(InputError, match="video_encoder"):
        triton.video_encoder(np.zeros((1, 2, 3, 32, 32), np.uint8))
    with pytest.raises(InputError, match="pixels must be uint8"):
        triton.video_encoder(np.zeros((1, 2, 3, 64, 128), np.float32))
    with pytest.raises(InputError, match="VIDEO has 2 rows, the streams with video have 1 patches"):
        step_one(triton, "bad", 0, np.zeros((2, P, Dv), np.float32), np.zeros((0, D, P), np.float32), None)
    with pytest.raises(InputError, match="STEPS must be in"):
        triton.locdit(
            np.zeros((1, C), np.float32),
            np.zeros((1, D, context_frames), np.float32),
            [0],
            [0],
            0,
            Guidance(),
        )
    with pytest.raises(InputError, match="windows must be"):
        triton.vae_decoder(np.zeros((1, D, P - 1), np.float32))
    # The same window past the client's check: the model refuses it (and only that request).
    with pytest.raises(InputError, match="vae_decoder: windows must be"):
        triton._infer("vae_decoder", {"WINDOW": np.zeros((1, D, P - 1), np.float32)}, ("AUDIO",))


def test_unreachable_server_is_unavailable_not_bad_input(triton, closed_port):
    backend = TritonBackend(f"127.0.0.1:{closed_port}", triton.config, timeout_s=2.0)
    try:
        assert not backend.ready(timeout_s=1.0)
        with pytest.raises(TritonUnavailableError) as raised:
            backend.video_encoder(np.zeros((1, 1, 3, 64, 128), np.uint8))
        assert not isinstance(raised.value, InputError)
    finally:
        backend.close()


def test_a_checkpoint_whose_sha256_differs_refuses_to_load(triton_server, triton_repository, tmp_path):
    checkpoint = triton_repository / CHECKPOINT_FILE
    sha256 = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    loaded = load_checkpoint(checkpoint, sha256=sha256).state_dict()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in tiny_model().state_dict().items())
    corrupt = bytearray(checkpoint.read_bytes())
    corrupt[-1] ^= 0xFF
    (tmp_path / "corrupt.safetensors").write_bytes(corrupt)
    with pytest.raises(InputError, match="sha256"):
        load_checkpoint(tmp_path / "corrupt.safetensors", sha256=sha256)
    # The real load path: a copy of the locdit model whose checkpoint is the corrupted file.
    model_dir = triton_repository / "locdit_corrupt"
    shutil.copytree(triton_repository / "locdit", model_dir)
    try:
        config = (model_dir / "config.pbtxt").read_text()
        config = config.replace('name: "locdit"', 'name: "locdit_corrupt"')
        config = config.replace(f'"{CHECKPOINT_FILE}"', f'"{tmp_path / "corrupt.safetensors"}"')
        (model_dir / "config.pbtxt").write_text(config)
        with grpcclient.InferenceServerClient(triton_server.url) as client:
            with pytest.raises(InferenceServerException, match="refusing to load"):
                client.load_model("locdit_corrupt")
            assert not client.is_model_ready("locdit_corrupt")
            assert all(client.is_model_ready(name) for name in STAGES)
    finally:
        shutil.rmtree(model_dir)


def test_a_model_without_its_checkpoint_beside_it_says_how_to_export(triton_server, triton_repository):
    """What Triton does to a repository on S3 (copies the model's folder, not the checkpoint at the
    root) must fail with the fix in the message, not a bare file-not-found."""
    model_dir = triton_repository / "locdit_alone"
    shutil.copytree(triton_repository / "locdit", model_dir)
    try:
        config = (model_dir / "config.pbtxt").read_text()
        config = config.replace('name: "locdit"', 'name: "locdit_alone"')
        config = config.replace(f'"{CHECKPOINT_FILE}"', '"elsewhere/checkpoint.safetensors"')
        (model_dir / "config.pbtxt").write_text(config)
        with grpcclient.InferenceServerClient(triton_server.url) as client:
            with pytest.raises(InferenceServerException, match="--checkpoint-location"):
                client.load_model("locdit_alone")
            assert not client.is_model_ready("locdit_alone")
    finally:
        shutil.rmtree(model_dir)


def test_export_cli_writes_the_repository(triton_repository, tmp_path, capsys):
    checkpoint = triton_repository / CHECKPOINT_FILE
    out = tmp_path / "models"
    argv = ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--max-batch", "4"]
    assert main([*argv, "--instances", "2", "--kind", "gpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert summary["models"] == list(STAGES)
    assert (out / CHECKPOINT_FILE).read_bytes() == checkpoint.read_bytes()
    source = (triton_repository / "locdit" / "1" / "model.py").read_text()
    for stage in STAGES:
        config = (out / stage / "config.pbtxt").read_text()
        assert f'name: "{stage}"' in config and "KIND_GPU" in config
        assert summary["checkpoint_sha256"] in config
        assert (out / stage / "1" / "model.py").read_text() == source
    assert "count: 1 " in (out / "spatial_lm" / "config.pbtxt").read_text()
    locdit = (out / "locdit" / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in locdit and "count: 2 " in locdit and "dynamic_batching" in locdit
    assert read_repository(out).config == load_checkpoint(checkpoint).config

    assert main(["export", "--checkpoint", str(tmp_path / "missing.safetensors"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("truncated", "damaged checkpoint"),
        ("wrong_shape", "has shape"),
        ("s3_out", "aws s3 sync"),
        ("relative_location", "must be an s3:// URI or an absolute path"),
    ],
)
def test_export_checks_everything_before_writing(
    case, reason, triton_repository, tmp_path, capsys, monkeypatch
):
    """A bad checkpoint or argument is one line, exit 2, and nothing written (not even a folder `s3:`)."""
    monkeypatch.chdir(tmp_path)
    data = (triton_repository / CHECKPOINT_FILE).read_bytes()
    checkpoint, out, extra = tmp_path / "in.safetensors", "models", []
    if case == "truncated":
        data = data[: len(data) // 2]
    elif case == "wrong_shape":
        state = load_safetensors(data)
        name = next(name for name, tensor in sorted(state.items()) if tensor.ndim)
        state[name] = torch.zeros(state[name].shape[0] + 1, *state[name].shape[1:])
        data = save_safetensors(state, metadata=read_metadata(data, checkpoint))
        reason = f"tensor {name} has shape"
    elif case == "s3_out":
        out = "s3://bucket/models"
    elif case == "relative_location":
        extra = ["--checkpoint-location", "relative/checkpoint.safetensors"]
    checkpoint.write_bytes(data)
    assert main(["export", "--checkpoint", str(checkpoint), "--out", out, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and reason in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.safetensors"]


def test_export_reads_the_checkpoint_from_s3(triton_repository, s3_bucket, tmp_path):
    checkpoint = (triton_repository / CHECKPOINT_FILE).read_bytes()
    uri = f"s3://{s3_bucket}/runs/tiny.safetensors"
    storage.write_bytes(uri, checkpoint)
    summary = export_repository(uri, tmp_path / "models")
    assert summary["source"] == uri
    assert (tmp_path / "models" / CHECKPOINT_FILE).read_bytes() == checkpoint
    load_checkpoint(tmp_path / "models" / CHECKPOINT_FILE, sha256=summary["checkpoint_sha256"])


def test_a_repository_served_from_s3_loads_its_checkpoint_from_an_absolute_location(
    triton_repository, s3_bucket, tmp_path
):
    """Triton copies only each model's folder from S3, so the models must find the checkpoint by URI."""
    uri = f"s3://{s3_bucket}/models/checkpoint.safetensors"
    storage.write_bytes(uri, (triton_repository / CHECKPOINT_FILE).read_bytes())
    summary = export_repository(uri, tmp_path / "models", checkpoint_location=uri)
    for stage in STAGES:
        assert f'string_value: "{uri}"' in (tmp_path / "models" / stage / "config.pbtxt").read_text()
    assert checkpoint_path(tmp_path / "models" / "locdit", uri) == uri
    load_checkpoint(uri, sha256=summary["checkpoint_sha256"])
    with pytest.raises(InputError, match="absolute path"):
        export_repository(uri, tmp_path / "other", checkpoint_location="relative/checkpoint.safetensors")
    storage.write_bytes(uri, b"tampered")
    with pytest.raises(InputError, match="refusing to load"):
        load_checkpoint(uri, sha256=summary["checkpoint_sha256"])


def test_pipeline_over_triton_equals_embedded_generation(triton, triton_repository):
    model = load_checkpoint(triton_repository / CHECKPOINT_FILE)
    frames = (np.random.default_rng(6).random((6, 64, 128, 3)) * 255).astype(np.uint8)
    settings = GenerationSettings(seed=5, steps=4)
    expected = generate(model, frames, text=TEXT, settings=settings)

    pipeline = EmbeddedPipeline(triton)
    spec = StreamSpec("e2e-triton", text=TEXT, settings=settings)
    session = StreamSession(pipeline.transport, pipeline.store, spec, model.config.patch_samples)
    session.start()
    chunks = []
    for i in range(len(frames)):
        session.send_frames(frames[i : i + 1])
        pipeline.pump()
        chunks += session.take_chunks("test")
    session.end()
    pipeline.pump()
    chunks += session.take_chunks("test")
    assert session.done
    audio = np.concatenate([chunk.audio for chunk in chunks], axis=-1)
    assert audio.shape == expected.shape
    assert np.max(np.abs(audio - expected)) <= 1e-4
    expected_latent = (model.config.vae.latent_dim, model.config.patch_frames)
    with pytest.raises(LMStateLostError):  # the stage freed the stream's LM state at its end
        step_one(triton, "e2e-triton", 1, None, np.zeros((1, *expected_latent), np.float32), None)


def test_mutual_tls_between_stages_and_triton(triton_repository, torch_backend, tmp_path):
    """Triton with --grpc-use-ssl-mutual: a stage with a certificate from the release's CA gets the
    same answers as in plaintext; a client without a certificate, or with one from another CA, is
    refused (the backend reports not ready, never a wrong answer)."""
    ca = write_certificate(tmp_path, "ca")
    write_certificate(tmp_path, "triton", ca)
    write_certificate(tmp_path, "stage", ca)
    write_certificate(tmp_path, "intruder", write_certificate(tmp_path, "other-ca"))
    server_tls = TritonTLS(tmp_path / "ca.pem", tmp_path / "triton.pem", tmp_path / "triton.key")
    ports = (free_port(), free_port(), free_port())
    with TritonServer(triton_repository, *ports, tmp_path / "triton.log", tls=server_tls) as server:
        config = torch_backend.config
        stage = TritonBackend(
            server.url,
            config,
            tls=TritonTLS(tmp_path / "ca.pem", tmp_path / "stage.pem", tmp_path / "stage.key"),
        )
        frames = np.random.default_rng(0).integers(0, 256, (1, 3, 3, *config.svac.video.frame_size), np.uint8)
        assert stage.ready()
        np.testing.assert_allclose(
            stage.video_encoder(frames), torch_backend.video_encoder(frames), atol=1e-5
        )
        plaintext = TritonBackend(server.url, config, timeout_s=2.0)
        intruder_tls = TritonTLS(tmp_path / "ca.pem", tmp_path / "intruder.pem", tmp_path / "intruder.key")
        intruder = TritonBackend(server.url, config, timeout_s=2.0, tls=intruder_tls)
        assert not plaintext.ready() and not intruder.ready()
        for backend in (stage, plaintext, intruder):
            backend.close()
