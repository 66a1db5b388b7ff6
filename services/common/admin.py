"""`swansphere.v1.Admin`: what a process serves and how busy it is, for operators and tests."""

from collections.abc import Callable

import grpc

from swansphere import __version__
from swansphere.v1 import stages_pb2 as pb
from swansphere.v1 import stages_pb2_grpc as pb_grpc


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(
        self,
        stage: str,
        model: str,
        model_ready: Callable[[], bool],
        queue_depth: Callable[[], int],
        active_streams: Callable[[], int],
    ):
        self.stage = stage
        self.model = model
        self.model_ready = model_ready
        self.queue_depth = queue_depth
        self.active_streams = active_streams

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusResponse:
        return pb.StatusResponse(
            stage=self.stage,
            model=self.model,
            model_ready=self.model_ready(),
            active_streams=self.active_streams(),
            queue_depth=self.queue_depth(),
            version=__version__,
        )
