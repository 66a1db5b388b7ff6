"""Triton python-backend model of one SwanSphere stage; `swansphere export` copies this file to
`<stage>/1/model.py` of the repository (see `triton_export` for the tensors and the state design).

Every stage runs `backend.TorchBackend`, the same code as embedded mode, so Triton and embedded mode
compute the same numbers; this file only converts Triton requests to and from its arrays. The stage
comes from the config's `stage` parameter, the checkpoint from `checkpoint` (verified against
`checkpoint_sha256` before loading). A GPU instance (KIND_GPU) runs on its own CUDA device.

Only importable inside Triton's python backend stub (it provides `triton_python_backend_utils`).
"""
# ruff: noqa: E402  (third-party imports must follow _use_pythonpath)

import os
import site
import sys


def _use_pythonpath() -> None:
    """The backend stub starts its interpreter isolated and ignores PYTHONPATH; honour it here (with
    the entries' .pth files, e.g. an editable install), so the stub imports the packages of the
    environment the server was started from (`tritonserver.TritonServer` sets it) before any other."""
    entries = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    sys.path[:0] = [entry for entry in entries if entry not in sys.path]
    for entry in entries:
        site.addsitedir(entry)


_use_pythonpath()

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from swansphere.checkpoint import load_checkpoint
from swansphere.errors import InputError
from swansphere.models.sampler import DEFAULT_GUIDANCE, Guidance
from swansphere.serving.backend import (
    FrameWindow,
    LMStateLostError,
    TorchBackend,
    VideoStateLostError,
    decoder_windows,
)
from swansphere.serving.stages import (
    LOCDIT,
    MAX_STEPS,
    SPATIAL_LM,
    VAE_DECODER,
    VIDEO_ENCODER,
    GenerationSettings,
    batched,
)
from swansphere.serving.triton_export import (
    LM_INPUTS,
    checkpoint_path,
    lm_steps,
    lm_streams,
)

LOCDIT_INPUTS = ("H", "CONTEXT", "SEED", "PATCH", "STEPS", "GUIDANCE")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        model_config = json.loads(args["model_config"])
        parameters = model_config.get("parameters", {})
        values = {key: value["string_value"] for key, value in parameters.items()}
        self.stage = values["stage"]
        handlers = {
            VIDEO_ENCODER: self._video_encoder,
            SPATIAL_LM: self._spatial_lm,
            LOCDIT: self._locdit,
            VAE_DECODER: self._vae_decoder,
        }
        if self.stage not in handlers:
            raise InputError(f"unknown stage {self.stage!r}")
        self.execute_requests = handlers[self.stage]
        path = checkpoint_path(Path(args["model_repository"]), values["checkpoint"])
        if not path.startswith("s3://") and not Path(path).is_file():
            raise InputError(
                f"no checkpoint at {path}: a repository that Triton copies from S3 needs the checkpoint's "
                "own location (`swansphere export --checkpoint-location`, docs/deploy.md)"
            )
        gpu = args["model_instance_kind"] == "GPU"
        device = f"cuda:{args['model_instance_device_id']}" if gpu else "cpu"
        if gpu:
            torch.cuda.set_device(device)  # CUDA graphs and their side streams go on the current device
        else:
            # Every model instance is its own process: with torch's default (one thread per core) the
            # instances' OpenMP threads spin against each other, 10x slower than one thread each here.
            torch.set_num_threads(int(os.environ.get("SWANSPHERE_TORCH_THREADS", "1")))
        # A GPU instance takes the GPU path (issue 7): bf16 matrix products, LocDiT's loop and the LM
        # step as CUDA graphs; the VAE decoder stays in float32.
        self.backend = TorchBackend(
            load_checkpoint(path, device, sha256=values["checkpoint_sha256"]),
            autocast=torch.bfloat16 if gpu else None,
            cuda_graphs=gpu,
            video_state_bytes=int(os.environ.get("SWANSPHERE_VIDEO_STATE_BYTES", 8 << 30)),
        )
        self._warm_up(int(model_config.get("max_batch_size", 0)))
        self.backend.reset()  # the warm-up's streams

    def _warm_up(self, max_batch: int) -> None:
        """Runs the stage once at every batch size it may be sent, before the model reports ready.
        PyTorch's CPU kernels (oneDNN) prepare themselves per input shape: the first decode at a new
        batch size took twice as long as the next (4 rows: 67.7 against 35.6 ms), which the first
        streams that happen to run together would pay on their first chunk. On a GPU it captures
        LocDiT's CUDA graphs, one per batch size and solver setting, so at the default steps and
        guidance; the LM step's graphs are captured by the first streams (and again when its cache
        grows)."""
        config = self.backend.config
        steps = GenerationSettings().steps if self.backend.graphed_sampler is not None else 1
        D, P = config.vae.latent_dim, config.patch_frames
        for rows in range(1, max_batch + 1):
            if self.stage == VIDEO_ENCODER:
                # A stream's first frame, then its next one, which goes on from the first's state.
                frame = np.zeros((rows, 1, 3, *config.svac.video.frame_size), np.uint8)
                streams = [f"warm-up {k}" for k in range(rows)]
                self.backend.video_encoder(frame, [FrameWindow(stream, 0) for stream in streams])
                self.backend.video_encoder(frame, [FrameWindow(stream, 1, resume=True) for stream in streams])
            elif self.stage == LOCDIT:
                h = np.zeros((rows, config.lm.d_model), np.float32)
                context = np.zeros((rows, D, config.locdit.context_frames), np.float32)
                self.backend.locdit(h, context, [0] * rows, [0] * rows, steps, DEFAULT_GUIDANCE)
            elif self.stage == VAE_DECODER:
                # A stream's first patch, then its next one, which continues from the first's state.
                first = np.broadcast_to(np.arange(rows, dtype=np.float32)[:, None, None], (rows, D, P))
                self.backend.vae_decoder(first)
                self.backend.vae_decoder(np.concatenate([first, first], axis=-1))

    def execute(self, requests: list) -> list:
        return self.execute_requests(requests)

    def _video_encoder(self, requests: list) -> list:
        """All windows of all requests, one batched encoding per window length and context; a resumed
        window whose stream has no state here is named in LOST (its TOKENS rows are zeros)."""
        rows: list[tuple[int, np.ndarray, FrameWindow]] = []  # (request, frames, window)
        for i, request in enumerate(requests):
            frames = _array(request, "FRAMES")
            names, firsts, contexts, resumes = (
                _array(request, name).reshape(-1) for name in ("STREAM_ID", "FIRST", "CONTEXT", "RESUME")
            )
            rows += [
                (
                    i,
                    frames[j],
                    FrameWindow(names[j].decode(), int(firsts[j]), int(contexts[j]), bool(resumes[j])),
                )
                for j in range(len(frames))
            ]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for k, (_, frames, window) in enumerate(rows):
            groups[len(frames), window.context].append(k)
        results: list = [None] * len(rows)
        for ks in groups.values():
            out = self.backend.video_encoder(np.stack([rows[k][1] for k in ks]), [rows[k][2] for k in ks])
            for k, result in zip(ks, out, strict=True):
                results[k] = result
        Dv = self.backend.config.svac.proj_dim
        tokens: list[list[np.ndarray]] = [[] for _ in requests]
        lost: list[list[bytes]] = [[] for _ in requests]
        for (i, frames, window), result in zip(rows, results, strict=True):
            gone = isinstance(result, VideoStateLostError)
            tokens[i].append(np.zeros((len(frames) - window.context, Dv), np.float32) if gone else result)
            lost[i].append(str(result).encode() if gone else b"")
        return [
            pb_utils.InferenceResponse(
                [
                    pb_utils.Tensor("TOKENS", np.stack(request_tokens)),
                    pb_utils.Tensor("LOST", np.array(request_lost, dtype=np.object_)[:, None]),
                ]
            )
            for request_tokens, request_lost in zip(tokens, lost, strict=True)
        ]

    def _spatial_lm(self, requests: list) -> list:
        """Every stream of a request steps in one batched LM call per patch; a stream whose state is
        lost is named in LOST (the client replays it), bad input answers the request with an error."""
        responses = []
        for request in requests:
            try:
                h, lost = self._spatial_lm_request(request)
            except InputError as err:
                responses.append(_error(err))
                continue
            outputs = [pb_utils.Tensor("H", h), pb_utils.Tensor("LOST", np.array(lost, dtype=np.object_))]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses

    def _spatial_lm_request(self, request: object) -> tuple[np.ndarray, list[bytes]]:
        arrays = {name: _optional(request, name) for name in (*LM_INPUTS, "END")}
        C = self.backend.config.lm.d_model
        if arrays["END"] is not None and bool(arrays["END"].reshape(-1)[0]):
            streams = lm_streams(arrays)
            for stream in streams:
                self.backend.end_stream(stream)
            return np.zeros((0, C), np.float32), [b""] * len(streams)
        steps = lm_steps(arrays)
        results = self.backend.spatial_lm(steps)
        rows = [
            np.zeros((step.patches, C), np.float32) if isinstance(result, LMStateLostError) else result
            for step, result in zip(steps, results, strict=True)
        ]
        lost = [str(r).encode() if isinstance(r, LMStateLostError) else b"" for r in results]
        return np.concatenate(rows).astype(np.float32), lost

    def _locdit(self, requests: list) -> list:
        """All rows of all requests, grouped by solver settings: one batched call per group."""
        responses: list = [None] * len(requests)
        inputs: dict[int, dict[str, np.ndarray]] = {}
        groups: dict[tuple[int, float, float], list[tuple[int, int]]] = defaultdict(list)
        for i, request in enumerate(requests):
            try:
                arrays = {name: _array(request, name) for name in LOCDIT_INPUTS}
                keys = [
                    _solver(int(steps), float(h_weight), float(context_weight))
                    for steps, (h_weight, context_weight) in zip(
                        arrays["STEPS"][:, 0], arrays["GUIDANCE"], strict=True
                    )
                ]
            except InputError as err:
                responses[i] = _error(err)
                continue
            inputs[i] = arrays
            for row, key in enumerate(keys):
                groups[key].append((i, row))
        z = {i: [None] * len(arrays["H"]) for i, arrays in inputs.items()}
        for (steps, h_weight, context_weight), rows in groups.items():
            out = self.backend.locdit(
                np.stack([inputs[i]["H"][row] for i, row in rows]),
                np.stack([inputs[i]["CONTEXT"][row] for i, row in rows]),
                [int(inputs[i]["SEED"][row, 0]) for i, row in rows],
                [int(inputs[i]["PATCH"][row, 0]) for i, row in rows],
                steps,
                Guidance(h_weight, context_weight),
            )
            for (i, row), z_row in zip(rows, out, strict=True):
                z[i][row] = z_row
        for i, rows in z.items():
            responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor("Z", np.stack(rows))])
        return responses

    def _vae_decoder(self, requests: list) -> list:
        """All windows of all requests, grouped by length: one batched decode per length; a request
        with a malformed window is answered with its error alone."""
        responses: list = [None] * len(requests)
        windows: dict[int, np.ndarray] = {}
        for i, request in enumerate(requests):
            try:
                windows[i] = decoder_windows(_array(request, "WINDOW"), self.backend.config)
            except InputError as err:
                responses[i] = _error(err)
        audio = _rows_by_length(list(windows.values()), self.backend.vae_decoder, length_axis=-1)
        for i, rows in zip(windows, audio, strict=True):
            responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor("AUDIO", rows)])
        return responses


def _solver(steps: int, h_weight: float, context_weight: float) -> tuple[int, float, float]:
    """A row's solver settings, checked as `stages.GenerationSettings` checks them."""
    if not 1 <= steps <= MAX_STEPS:
        raise InputError(f"locdit: STEPS must be in 1..{MAX_STEPS}, got {steps}")
    try:
        Guidance(h_weight, context_weight)
    except ValueError as err:
        raise InputError(f"locdit: {err}") from None
    return steps, h_weight, context_weight


def _rows_by_length(
    batches: list[np.ndarray], compute: Callable[[np.ndarray], np.ndarray], length_axis: int
) -> list[np.ndarray]:
    """`compute` over the rows of every request's batch, one call per row length (`batched`)."""
    rows = [row for batch in batches for row in batch]
    out = iter(batched(rows, compute, length_axis))
    return [np.stack([next(out) for _ in batch]) for batch in batches]


def _optional(request: object, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _array(request: object, name: str) -> np.ndarray:
    array = _optional(request, name)
    if array is None:
        raise InputError(f"missing input {name}")
    return array


def _error(err: InputError) -> object:
    """Bad input -> INVALID_ARGUMENT (the client raises InputError and the stream fails)."""
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err), pb_utils.TritonError.INVALID_ARG))
