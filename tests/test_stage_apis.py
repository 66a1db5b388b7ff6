"""The stage services' own gRPC APIs (`VideoEncoder.Encode`, `SpatialLM.Step`, `LocDiT.Sample`,
`VAEDecoder.Decode`, DESIGN §2) over real gRPC on loopback, each servicer over a torch backend: a
call answers what the backend computes, and bad input is INVALID_ARGUMENT naming what is wrong."""

import grpc
import numpy as np
import pytest
from helpers_model import tiny_model

from services.common.server import build_server
from services.common.settings import load_settings
from services.common.tensors import from_tensor, to_tensor
from services.locdit.server import LocDiTServicer
from services.spatial_lm.server import SpatialLMServicer
from services.vae_decoder.server import VAEDecoderServicer
from services.video_encoder.server import VideoEncoderServicer
from swansphere.models.sampler import Guidance
from swansphere.serving.backend import LMStep, TorchBackend
from swansphere.v1 import stages_pb2 as pb
from swansphere.v1 import stages_pb2_grpc as pb_grpc
from swansphere.video import model_pixels

SERVICES = [
    "swansphere.v1.VideoEncoder",
    "swansphere.v1.SpatialLM",
    "swansphere.v1.LocDiT",
    "swansphere.v1.VAEDecoder",
]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def channel(model):
    """One server with the four servicers, each over its own backend (as each stage service has)."""
    servicers = [
        (pb_grpc.add_VideoEncoderServicer_to_server, VideoEncoderServicer(TorchBackend(model))),
        (pb_grpc.add_SpatialLMServicer_to_server, SpatialLMServicer(TorchBackend(model))),
        (pb_grpc.add_LocDiTServicer_to_server, LocDiTServicer(TorchBackend(model))),
        (pb_grpc.add_VAEDecoderServicer_to_server, VAEDecoderServicer(TorchBackend(model))),
    ]
    built = build_server(load_settings(port=0, max_streams=2), servicers, SERVICES)
    built.server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{built.port}") as channel:
            yield channel
    finally:
        built.server.stop(None).wait()


def sizes(model) -> tuple[int, int, int, int, int]:
    c = model.config
    return c.patch_frames, c.vae.latent_dim, c.lm.video_dim, c.locdit.cond_dim, c.locdit.context_frames


def test_each_stage_api_answers_what_its_backend_computes(model, channel):
    P, D, Dv, Dh, C = sizes(model)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 64, 128, 3), dtype=np.uint8)
    reply = pb_grpc.VideoEncoderStub(channel).Encode(
        pb.EncodeRequest(stream_id="v", first_frame=0, frames=to_tensor(frames)), timeout=60
    )
    expected = TorchBackend(model).video_encoder(model_pixels(frames, (64, 128))[None])[0]
    assert reply.stream_id == "v" and np.array_equal(
        from_tensor(reply.tokens, "tokens", "float32", 2), expected
    )

    video = rng.standard_normal((1, P, Dv)).astype(np.float32)
    history = np.zeros((0, D, P), np.float32)
    reply = pb_grpc.SpatialLMStub(channel).Step(
        pb.SpatialLMRequest(
            stream_id="s",
            patch_index=0,
            video_tokens=to_tensor(video),
            history=to_tensor(history),
            text="rain",
        ),
        timeout=60,
    )
    (h,) = TorchBackend(model).spatial_lm([LMStep("s", 0, video, history, "rain")])
    assert np.array_equal(from_tensor(reply.h, "h", "float32", 2), h)

    h_t, context = rng.standard_normal(Dh).astype(np.float32), rng.standard_normal((D, C)).astype(np.float32)
    reply = pb_grpc.LocDiTStub(channel).Sample(
        pb.LocDiTRequest(
            stream_id="s", patch_index=2, h=to_tensor(h_t), context=to_tensor(context), seed=5, steps=4
        ),
        timeout=60,
    )
    z = TorchBackend(model).locdit(h_t[None], context[None], [5], [2], 4, Guidance())[0]
    assert reply.patch_index == 2 and np.array_equal(from_tensor(reply.latents, "latents", "float32", 2), z)

    window = rng.standard_normal((D, 3 * P)).astype(np.float32)
    reply = pb_grpc.VAEDecoderStub(channel).Decode(
        pb.DecodeRequest(stream_id="s", patch_index=2, latents=to_tensor(window)), timeout=60
    )
    audio = TorchBackend(model).vae_decoder(window[None])[0]
    assert from_tensor(reply.audio, "audio", "float32", 2).shape == (4, model.config.patch_samples)
    assert np.array_equal(from_tensor(reply.audio, "audio", "float32", 2), audio)


def bad_requests(model) -> list[tuple[str, str, object, str]]:
    """(id, method, request, what the error says)."""
    P, D, Dv, Dh, C = sizes(model)
    f32 = np.float32
    h, context = np.zeros(Dh, f32), np.zeros((D, C), f32)
    history = to_tensor(np.zeros((0, D, P), f32))
    return [
        (
            "frames-not-equirect",
            "Encode",
            pb.EncodeRequest(frames=to_tensor(np.zeros((1, 64, 64, 3), np.uint8))),
            "equirectangular",
        ),
        (
            "frames-float",
            "Encode",
            pb.EncodeRequest(frames=to_tensor(np.zeros((1, 64, 128, 3), f32))),
            "frames: dtype float32, expected uint8",
        ),
        ("frames-missing", "Encode", pb.EncodeRequest(), "frames: dtype (unset)"),
        (
            "lm-video-width",
            "Step",
            pb.SpatialLMRequest(
                stream_id="a", video_tokens=to_tensor(np.zeros((1, P, Dv + 1), f32)), history=history
            ),
            f"video must be (1, {P}, {Dv})",
        ),
        (
            "lm-nan-history",
            "Step",
            pb.SpatialLMRequest(stream_id="b", history=to_tensor(np.full((1, D, P), np.nan, f32))),
            "history: NaN",
        ),
        (
            "locdit-h-width",
            "Sample",
            pb.LocDiTRequest(h=to_tensor(np.zeros(Dh + 1, f32)), context=to_tensor(context)),
            "expected h of shape",
        ),
        (
            "locdit-inf-h",
            "Sample",
            pb.LocDiTRequest(h=to_tensor(np.full(Dh, np.inf, f32)), context=to_tensor(context)),
            "h: NaN or infinite",
        ),
        (
            "locdit-steps",
            "Sample",
            pb.LocDiTRequest(h=to_tensor(h), context=to_tensor(context), steps=100_000),
            "steps: 100000, at most",
        ),
        (
            "locdit-guidance",
            "Sample",
            pb.LocDiTRequest(h=to_tensor(h), context=to_tensor(context), h_guidance=float("nan")),
            "h_weight must be a finite",
        ),
        (
            "decoder-no-frames",
            "Decode",
            pb.DecodeRequest(latents=to_tensor(np.zeros((D, 0), f32))),
            f"L >= {P}",
        ),
        (
            "decoder-latent-dim",
            "Decode",
            pb.DecodeRequest(latents=to_tensor(np.zeros((D + 1, P), f32))),
            f"(B, {D}, L >= {P})",
        ),
    ]


STUBS = {
    "Encode": pb_grpc.VideoEncoderStub,
    "Step": pb_grpc.SpatialLMStub,
    "Sample": pb_grpc.LocDiTStub,
    "Decode": pb_grpc.VAEDecoderStub,
}


def test_bad_input_is_invalid_argument_naming_what_is_wrong(model, channel):
    for name, method, request, reason in bad_requests(model):
        with pytest.raises(grpc.RpcError) as refused:
            getattr(STUBS[method](channel), method)(request, timeout=60)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, (name, refused.value.details())
        assert reason in refused.value.details(), (name, refused.value.details())


def test_a_stream_stepped_out_of_order_is_a_failed_precondition(model, channel):
    """The LM holds a stream's state from patch 0 on; a first call at patch 3 has nothing to go on from."""
    P, D, _, _, _ = sizes(model)
    request = pb.SpatialLMRequest(
        stream_id="late", patch_index=3, history=to_tensor(np.zeros((3, D, P), np.float32))
    )
    with pytest.raises(grpc.RpcError) as refused:
        pb_grpc.SpatialLMStub(channel).Step(request, timeout=60)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details() == "spatial_lm: stream late has no state, asked for patch 3"
