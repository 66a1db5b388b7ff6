"""`swansphere serve locdit`: the stage's worker plus `LocDiT.Sample` for direct calls."""

import grpc

from services.common.stage import run_stage
from services.common.tensors import from_tensor, to_tensor
from swansphere.errors import InputError
from swansphere.models.sampler import DEFAULT_GUIDANCE, Guidance
from swansphere.serving.backend import Backend
from swansphere.serving.stages import LOCDIT, MAX_STEPS
from swansphere.v1 import stages_pb2 as pb
from swansphere.v1 import stages_pb2_grpc as pb_grpc


class LocDiTServicer(pb_grpc.LocDiTServicer):
    def __init__(self, backend: Backend):
        self.backend = backend

    def Sample(self, request: pb.LocDiTRequest, context: grpc.ServicerContext) -> pb.LocDiTResponse:
        try:
            h = from_tensor(request.h, "h", "float32", 1)
            boundary = from_tensor(request.context, "context", "float32", 2)
            steps = request.steps or 20
            if steps > MAX_STEPS:
                raise InputError(f"steps: {steps}, at most {MAX_STEPS}")
            guidance = Guidance(
                request.h_guidance if request.HasField("h_guidance") else DEFAULT_GUIDANCE.h_weight,
                request.context_guidance
                if request.HasField("context_guidance")
                else DEFAULT_GUIDANCE.context_weight,
            )
            z = self.backend.locdit(
                h[None], boundary[None], [request.seed % 2**63], [request.patch_index], steps, guidance
            )[0]
        except (InputError, ValueError) as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.LocDiTResponse(
            stream_id=request.stream_id, patch_index=request.patch_index, latents=to_tensor(z)
        )


def main() -> None:
    run_stage(LOCDIT, "swansphere.v1.LocDiT", pb_grpc.add_LocDiTServicer_to_server, LocDiTServicer)
