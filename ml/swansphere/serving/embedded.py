"""Embedded mode (DESIGN §2): the four stages, in-process queues and the torch backend in one process.
`swansphere generate` and `make demo` run this; services run the same stages and workers over Redis
and Triton."""

from swansphere.serving.backend import Backend
from swansphere.serving.stages import STAGES, build_stages
from swansphere.serving.state import MemoryStateStore
from swansphere.serving.transport import MemoryTransport
from swansphere.serving.worker import StageWorker

BATCH = 64
"""Messages a stage takes per call; LocDiT and the decoder batch them across streams."""


class EmbeddedPipeline:
    def __init__(self, backend: Backend):
        self.backend = backend
        self.transport = MemoryTransport()
        self.store = MemoryStateStore()
        self.stages = build_stages(backend, self.store)
        self.workers = [
            StageWorker(self.stages[name], self.transport, "embedded", BATCH, block_ms=0) for name in STAGES
        ]

    def pump(self) -> None:
        """Run the stages until none has anything left to do."""
        while sum(worker.run_once() for worker in self.workers):
            pass

    def stage_seconds(self) -> dict[str, float]:
        """Wall time spent per stage so far."""
        return {name: stage.seconds[name] for name, stage in self.stages.items()}
