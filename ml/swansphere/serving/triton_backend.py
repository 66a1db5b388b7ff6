"""`Backend` over Triton's gRPC API (service mode, DESIGN §2): the same arrays as `TorchBackend`, sent to
the models `swansphere export` wrote (`triton_export` lists the tensors).

LocDiT and the decoder send a stage's whole batch as one request with a batch dimension (split into
requests of at most the model's max_batch_size rows). Triton's dynamic batcher then merges the
requests of all callers (stage workers, pods) that arrive within 2 ms, and the model groups their
rows by solver settings (LocDiT) or window length (decoder), so patches of many streams share one
batched call while each caller still makes one round trip per stage batch.

The spatial LM gets one request for all the streams of a stage call (`triton_export.lm_request`); a
stream named in its LOST output comes back as an LMStateLostError (the stage replays it). The video
encoder's LOST output does the same for a resumed window (`VideoStateLostError`: the stage sends it
again with its context frames).

Errors: INVALID_ARGUMENT -> InputError (the stream fails); anything else (unreachable, model not
loaded, deadline, a failure inside the model) -> TritonUnavailableError, which is not an InputError,
so stage workers leave the batch for redelivery and back off.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from swansphere.errors import InputError
from swansphere.models.sampler import Guidance
from swansphere.models.swansphere import SwanSphereConfig
from swansphere.serving.backend import (
    FrameWindow,
    LMStateLostError,
    LMStep,
    VideoStateLostError,
    decoder_windows,
)
from swansphere.serving.stages import LOCDIT, SPATIAL_LM, STAGES, VAE_DECODER, VIDEO_ENCODER
from swansphere.serving.triton_export import lm_request

CHANNEL_ARGS = [
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
"""tritonclient's message limits, and reconnect backoff capped at 2 s (gRPC's default grows to 120 s):
after Triton restarts, calls and health checks find it again within seconds."""


class TritonUnavailableError(RuntimeError):
    """Triton could not answer now (unreachable, model not ready, deadline passed, model failure):
    retryable, unlike bad input."""


@dataclass(frozen=True)
class TritonTLS:
    """Mutual TLS on the stage -> Triton gRPC hop: the CA both sides trust and this side's own
    certificate and key (PEM files). The server side is `TritonServer(tls=...)` or Triton's
    `--grpc-use-ssl-mutual` flags."""

    ca: Path
    cert: Path
    key: Path

    def client_options(self) -> dict[str, Any]:
        """`tritonclient.grpc.InferenceServerClient` keyword arguments."""
        return {
            "ssl": True,
            "root_certificates": str(self.ca),
            "private_key": str(self.key),
            "certificate_chain": str(self.cert),
        }


class TritonBackend:
    """The four stage models of one Triton server; thread-safe (one gRPC channel)."""

    def __init__(
        self, url: str, config: SwanSphereConfig, timeout_s: float = 30.0, tls: TritonTLS | None = None
    ):
        self.url = url
        self.config = config
        self.timeout_s = timeout_s
        options = tls.client_options() if tls is not None else {}
        self._client = grpcclient.InferenceServerClient(url, channel_args=CHANNEL_ARGS, **options)
        self._max_batch: dict[str, int] = {}

    def ready(self, timeout_s: float = 2.0) -> bool:
        """Server live and all four models ready (for the services' health checks)."""
        try:
            return self._client.is_server_live(client_timeout=timeout_s) and all(
                self._client.is_model_ready(name, client_timeout=timeout_s) for name in STAGES
            )
        except InferenceServerException:
            return False

    def close(self) -> None:
        self._client.close()

    def video_encoder(
        self, pixels: np.ndarray, windows: Sequence[FrameWindow] | None = None
    ) -> list[np.ndarray | VideoStateLostError]:
        if pixels.dtype != np.uint8:
            raise InputError(f"video_encoder: pixels must be uint8, got {pixels.dtype}")
        windows = windows or FrameWindow.alone(len(pixels))
        rows = {
            "FRAMES": pixels,
            "STREAM_ID": np.array([[w.stream_id.encode()] for w in windows], dtype=np.object_),
            "FIRST": np.array([[w.first] for w in windows], np.int64),
            "CONTEXT": np.array([[w.context] for w in windows], np.int64),
            "RESUME": np.array([[w.resume] for w in windows]),
        }
        tokens, lost = self._batched(VIDEO_ENCODER, rows, ("TOKENS", "LOST"))
        return [
            VideoStateLostError(reason.decode()) if reason else rows
            for rows, reason in zip(tokens, lost.reshape(-1), strict=True)
        ]

    def spatial_lm(self, steps: Sequence[LMStep]) -> list[np.ndarray | LMStateLostError]:
        if not steps:
            return []
        h, lost = self._infer(SPATIAL_LM, lm_request(steps), ("H", "LOST"))
        results: list[np.ndarray | LMStateLostError] = []
        at = 0
        for step, reason in zip(steps, lost.reshape(-1), strict=True):
            rows, at = h[at : at + step.patches], at + step.patches
            results.append(LMStateLostError(reason.decode()) if reason else rows)
        return results

    def end_stream(self, stream_id: str) -> None:
        self._infer(SPATIAL_LM, {"STREAM_ID": _bytes(stream_id), "END": np.array([True])}, ("H",))

    def locdit(
        self,
        h: np.ndarray,
        context: np.ndarray,
        seeds: Sequence[int],
        patches: Sequence[int],
        steps: int,
        guidance: Guidance,
    ) -> np.ndarray:
        if not len(h) == len(context) == len(seeds) == len(patches):
            raise InputError(
                f"locdit: batch sizes differ (h {len(h)}, context {len(context)}, "
                f"seeds {len(seeds)}, patches {len(patches)})"
            )
        B = len(h)
        rows = {
            "H": _f32(h),
            "CONTEXT": _f32(context),
            "SEED": np.asarray(seeds, np.int64).reshape(B, 1),
            "PATCH": np.asarray(patches, np.int64).reshape(B, 1),
            "STEPS": np.full((B, 1), steps, np.int32),
            "GUIDANCE": np.tile(np.array([guidance.h_weight, guidance.context_weight], np.float32), (B, 1)),
        }
        return self._batched(LOCDIT, rows, ("Z",))[0]

    def vae_decoder(self, windows: np.ndarray) -> np.ndarray:
        windows = decoder_windows(_f32(windows), self.config)  # bad input fails here, not in Triton
        return self._batched(VAE_DECODER, {"WINDOW": windows}, ("AUDIO",))[0]

    def _batched(self, model: str, rows: dict[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        """Requests of at most the model's max_batch_size rows; each output concatenated in order."""
        size = self._model_max_batch(model)
        total = len(next(iter(rows.values())))
        parts = [
            self._infer(model, {name: array[start : start + size] for name, array in rows.items()}, outputs)
            for start in range(0, total, size)
        ]
        return [np.concatenate(part) for part in zip(*parts, strict=True)]

    def _model_max_batch(self, model: str) -> int:
        if model not in self._max_batch:
            try:
                config = self._client.get_model_config(model, client_timeout=self.timeout_s).config
            except InferenceServerException as err:
                raise self._translate(model, err) from None
            self._max_batch[model] = config.max_batch_size
        return self._max_batch[model]

    def _infer(self, model: str, arrays: dict[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        """The named outputs of one request."""
        inputs = []
        for name, array in arrays.items():
            tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            result = self._client.infer(
                model,
                inputs,
                outputs=[grpcclient.InferRequestedOutput(output) for output in outputs],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as err:
            raise self._translate(model, err) from None
        return [result.as_numpy(output) for output in outputs]

    def _translate(self, model: str, err: InferenceServerException) -> Exception:
        message = err.message() or str(err)
        if err.status() == "StatusCode.INVALID_ARGUMENT":
            return InputError(f"{model}: {message}")
        return TritonUnavailableError(f"triton {self.url} {model}: {err.status()}: {message}")


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _bytes(text: str) -> np.ndarray:
    return np.array([text.encode()], dtype=np.object_)
