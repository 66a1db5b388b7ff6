"""`swansphere serve spatial_lm`: the stage's worker plus `SpatialLM.Step` for direct calls."""

import grpc

from services.common.stage import run_stage
from services.common.tensors import from_tensor, to_tensor
from swansphere.errors import InputError
from swansphere.serving.backend import Backend, LMStateLostError, LMStep
from swansphere.serving.stages import SPATIAL_LM
from swansphere.v1 import stages_pb2 as pb
from swansphere.v1 import stages_pb2_grpc as pb_grpc


class SpatialLMServicer(pb_grpc.SpatialLMServicer):
    def __init__(self, backend: Backend):
        self.backend = backend

    def Step(self, request: pb.SpatialLMRequest, context: grpc.ServicerContext) -> pb.SpatialLMResponse:
        """Plans patches from `patch_index` on; a stream is stepped in order from patch 0, or the
        call fails with FAILED_PRECONDITION (the LM has no state there)."""
        try:
            video = None
            if request.HasField("video_tokens"):
                video = from_tensor(request.video_tokens, "video_tokens", "float32", 3)
            history = from_tensor(request.history, "history", "float32", 3)
            step = LMStep(request.stream_id, request.patch_index, video, history, request.text or None)
            (h,) = self.backend.spatial_lm([step])
        except InputError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if isinstance(h, LMStateLostError):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(h))
        return pb.SpatialLMResponse(
            stream_id=request.stream_id, patch_index=request.patch_index, h=to_tensor(h)
        )


def main() -> None:
    run_stage(
        SPATIAL_LM, "swansphere.v1.SpatialLM", pb_grpc.add_SpatialLMServicer_to_server, SpatialLMServicer
    )
