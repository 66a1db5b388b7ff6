"""Prometheus metrics every service exports (default registry, one per process), and their endpoint."""

from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

STAGE_LATENCY = Histogram(
    "swansphere_stage_latency_seconds",
    "Wall time of one stage step (a batch of patches or frames).",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.186, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
"""0.186 s is one patch of audio: a step slower than that cannot keep a stream real-time."""
QUEUE_DEPTH = Gauge("swansphere_queue_depth", "Messages waiting in a stage's input.", ["stage"])
STATES_LOST = Counter(
    "swansphere_states_lost",
    "Streams whose state a stage rebuilt: its Triton model had lost it (restart, eviction, another pod).",
    ["stage"],
)
"""Exported as swansphere_states_lost_total (`Stage.on_states_lost`): each is an LM replay or a video
context window resent; a steady rate means the state budget or the routing is off."""
ACTIVE_STREAMS = Gauge("swansphere_active_streams", "Streams this process is serving now.")
REQUESTS = Counter(
    "swansphere_grpc_requests", "Finished gRPC calls by full method name and status code.", ["method", "code"]
)
"""Exported as swansphere_grpc_requests_total; counted by the server interceptor."""


def start_metrics_server(port: int, host: str = "127.0.0.1") -> WSGIServer:
    """Serve /metrics on a daemon thread; `shutdown()` on the result stops it."""
    server, _thread = start_http_server(port, addr=host)
    return server
