"""The public API's .proto files: generated modules, method shapes, and a client generated from the .proto
files alone (a fresh protoc run, no SDK, no package code) calling Generate over loopback."""

import json
import os
import subprocess
import sys
import textwrap
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from swansphere.v1 import stages_pb2, swansphere_pb2, swansphere_pb2_grpc

PROTOS = Path(__file__).resolve().parents[1] / "protos"


def test_generate_is_bidi_streaming_and_generate_clip_is_unary():
    methods = swansphere_pb2.DESCRIPTOR.services_by_name["SwanSphere"].methods_by_name
    generate, clip = methods["Generate"], methods["GenerateClip"]
    assert generate.full_name == "swansphere.v1.SwanSphere.Generate"
    assert (generate.client_streaming, generate.server_streaming) == (True, True)
    assert (clip.client_streaming, clip.server_streaming) == (False, False)
    assert generate.input_type.name == "GenerateRequest" and generate.output_type.name == "GenerateResponse"


def test_messages_have_the_documented_shapes():
    request = swansphere_pb2.GenerateRequest.DESCRIPTOR
    assert [f.name for f in request.oneofs_by_name["kind"].fields] == ["config", "video", "end"]
    response = swansphere_pb2.GenerateResponse.DESCRIPTOR
    assert [f.name for f in response.oneofs_by_name["kind"].fields] == ["chunk", "summary"]
    for message in (swansphere_pb2.Chunk, swansphere_pb2.GenerateClipResponse):
        audio = message.DESCRIPTOR.oneofs_by_name["audio"]
        assert [f.name for f in audio.fields] == ["float32_le", "pcm16_le"]
    config = swansphere_pb2.GenerateConfig(h_guidance=0.0)
    assert config.HasField("h_guidance") and not config.HasField("context_guidance")


def test_stage_services_each_have_one_unary_method_and_admin_reports_status():
    expected = {
        "VideoEncoder": "Encode",
        "SpatialLM": "Step",
        "LocDiT": "Sample",
        "VAEDecoder": "Decode",
        "Admin": "Status",
    }
    services = stages_pb2.DESCRIPTOR.services_by_name
    for service, method in expected.items():
        (only,) = services[service].methods
        assert only.name == method and not only.client_streaming and not only.server_streaming
    tensor = stages_pb2.Tensor(dtype="float32", shape=[2, 3], data=bytes(24))
    assert stages_pb2.Tensor.FromString(tensor.SerializeToString()) == tensor
    fields = [f.name for f in stages_pb2.StatusResponse.DESCRIPTOR.fields]
    assert fields == ["stage", "model", "model_ready", "active_streams", "queue_depth", "version"]


class TinySwanSphere(swansphere_pb2_grpc.SwanSphereServicer):
    """One chunk per VideoFrames message (its frame count as samples), then a summary."""

    def Generate(self, request_iterator, context):
        config, chunks = None, 0
        for request in request_iterator:
            kind = request.WhichOneof("kind")
            if kind == "config":
                config = request.config
            elif kind == "video":
                samples = len(request.video.frames)
                yield swansphere_pb2.GenerateResponse(
                    chunk=swansphere_pb2.Chunk(
                        patch_index=chunks,
                        first_sample=chunks * 8192,
                        channels=4,
                        samples=samples,
                        float32_le=bytes(16 * samples),
                        sample_rate=44100,
                    )
                )
                chunks += 1
            else:
                break
        yield swansphere_pb2.GenerateResponse(
            summary=swansphere_pb2.Summary(chunks=chunks, model=f"tiny seed {config.seed}", stream_id="s1")
        )


@pytest.fixture
def tiny_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    swansphere_pb2_grpc.add_SwanSphereServicer_to_server(TinySwanSphere(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait()


CLIENT = textwrap.dedent(
    """
    import json, sys
    import grpc
    import swansphere
    from swansphere.v1 import swansphere_pb2 as pb, swansphere_pb2_grpc as pb_grpc

    def requests():
        yield pb.GenerateRequest(config=pb.GenerateConfig(text="a bell", seed=7, frame_rate=4))
        for i, count in enumerate((2, 3)):
            frames = [pb.Frame(timestamp_s=(2 * i + k) / 4, data=bytes(4 * 2 * 3)) for k in range(count)]
            yield pb.GenerateRequest(video=pb.VideoFrames(width=4, height=2, frames=frames))
        yield pb.GenerateRequest(end=pb.End())

    with grpc.insecure_channel(sys.argv[1]) as channel:
        responses = list(pb_grpc.SwanSphereStub(channel).Generate(requests(), timeout=20))
    print(json.dumps({
        "package": swansphere.__file__,
        "kinds": [r.WhichOneof("kind") for r in responses],
        "samples": [r.chunk.samples for r in responses[:-1]],
        "model": responses[-1].summary.model,
    }))
    """
)


def test_a_client_generated_from_the_proto_files_alone_can_call_generate(tiny_server, tmp_path):
    generated = tmp_path / "generated"
    generated.mkdir()
    protoc = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"--python_out={generated}"]
    protoc += [
        f"--grpc_python_out={generated}",
        *map(str, sorted((PROTOS / "swansphere/v1").glob("*.proto"))),
    ]
    subprocess.run(protoc, check=True)
    for package in (generated / "swansphere", generated / "swansphere/v1"):
        (package / "__init__.py").touch()
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    env = {**os.environ, "PYTHONPATH": str(generated)}
    run = subprocess.run(
        [sys.executable, str(script), tiny_server],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    result = json.loads(run.stdout)
    assert result["package"].startswith(str(generated)), "the client must not import the project's package"
    assert result["kinds"] == ["chunk", "chunk", "summary"]
    assert result["samples"] == [2, 3] and result["model"] == "tiny seed 7"
