"""`swansphere serve video_encoder`: the stage's worker plus `VideoEncoder.Encode` for direct calls."""

import grpc

from services.common.stage import run_stage
from services.common.tensors import from_tensor, to_tensor
from swansphere.client import check_frames
from swansphere.errors import InputError
from swansphere.serving.backend import Backend
from swansphere.serving.stages import VIDEO_ENCODER
from swansphere.v1 import stages_pb2 as pb
from swansphere.v1 import stages_pb2_grpc as pb_grpc
from swansphere.video import model_pixels


class VideoEncoderServicer(pb_grpc.VideoEncoderServicer):
    def __init__(self, backend: Backend):
        self.backend = backend

    def Encode(self, request: pb.EncodeRequest, context: grpc.ServicerContext) -> pb.EncodeResponse:
        """Tokens of a whole clip's frames (block-causal: a prefix gives the same first tokens)."""
        try:
            frames = check_frames(from_tensor(request.frames, "frames", "uint8", 4))
            size = self.backend.config.svac.video.frame_size
            tokens = self.backend.video_encoder(model_pixels(frames, size)[None])[0]
        except InputError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.EncodeResponse(
            stream_id=request.stream_id, first_frame=request.first_frame, tokens=to_tensor(tokens)
        )


def main() -> None:
    run_stage(
        VIDEO_ENCODER,
        "swansphere.v1.VideoEncoder",
        pb_grpc.add_VideoEncoderServicer_to_server,
        VideoEncoderServicer,
    )
