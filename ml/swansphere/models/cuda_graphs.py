"""Capturing a CUDA graph the way `GraphedSampler` (LocDiT's loop) and `GraphedStep` (the LM step) do."""

from collections.abc import Callable

import torch
from torch import Tensor


def capture(
    run: Callable[[], Tensor], pool: tuple, after_warm_up: Callable[[], object] | None = None
) -> tuple[torch.cuda.CUDAGraph, Tensor]:
    """`run` as a CUDA graph in memory `pool`, and its output (refilled by each replay). `run` goes
    once on a side stream first, so libraries and the allocator are set up outside the capture;
    `after_warm_up` undoes what that run changed that the replay must not see twice."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    if after_warm_up is not None:
        after_warm_up()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        output = run()
    return graph, output
