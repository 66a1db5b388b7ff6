"""`swansphere serve vae_decoder`: the stage's worker plus `VAEDecoder.Decode` for direct calls."""

import grpc

from services.common.stage import run_stage
from services.common.tensors import from_tensor, to_tensor
from swansphere.errors import InputError
from swansphere.serving.backend import Backend
from swansphere.serving.stages import VAE_DECODER
from swansphere.v1 import stages_pb2 as pb
from swansphere.v1 import stages_pb2_grpc as pb_grpc


class VAEDecoderServicer(pb_grpc.VAEDecoderServicer):
    def __init__(self, backend: Backend):
        self.backend = backend

    def Decode(self, request: pb.DecodeRequest, context: grpc.ServicerContext) -> pb.DecodeResponse:
        """FOA of the last patch of a latent window (left context, then the patch's frames)."""
        try:
            window = from_tensor(request.latents, "latents", "float32", 2)
            audio = self.backend.vae_decoder(window[None])[0]
        except (InputError, ValueError) as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.DecodeResponse(
            stream_id=request.stream_id, patch_index=request.patch_index, audio=to_tensor(audio)
        )


def main() -> None:
    run_stage(
        VAE_DECODER, "swansphere.v1.VAEDecoder", pb_grpc.add_VAEDecoderServicer_to_server, VAEDecoderServicer
    )
