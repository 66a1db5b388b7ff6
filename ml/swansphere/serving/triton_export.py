"""The Triton model repository of one checkpoint (DESIGN §2): written by `swansphere export`, served by
Triton's python backend (`triton_model.py`), called by `triton_backend.TritonBackend`.

Layout (a local folder, e.g. `deploy/triton/models`)::

    OUT/swansphere.json            the checkpoint's config, its sha256 and source (read_repository)
    OUT/checkpoint.safetensors     the checkpoint, once for all four models
    OUT/<stage>/config.pbtxt       stage = video_encoder | spatial_lm | locdit | vae_decoder
    OUT/<stage>/1/model.py         a copy of triton_model.py (the glue; the modules come from the
                                   installed `swansphere` package)

Each config names its stage, the checkpoint (relative to the repository root) and the checkpoint's
sha256 in `parameters`; a model refuses to load when the file's hash differs.

Tensors mirror `backend.Backend` one to one:

- video_encoder: dynamic batching, one instance: FRAMES UINT8 [-1, 3, h, w] (a window of one
  stream's frames), STREAM_ID BYTES [1], FIRST INT64 [1] (the window's first frame), CONTEXT INT64
  [1] (how many of its frames are context), RESUME BOOL [1] (only new frames, going on from the
  stream's state: `backend.FrameWindow`) -> TOKENS FP32 [-1, Dv] of the frames after the context and
  LOST BYTES [1] ("" or why a resumed window's stream has no state; its TOKENS rows are zeros),
  grouped by window length and context (a stage sends all its streams' windows at once). The model
  keeps each stream's encoder state, so a stream sends each frame once and a call costs only its new
  frames; one instance, like the LM, so that a stream's calls find that state.
- spatial_lm: one request steps B streams together (`lm_request`, `lm_steps`): STREAM_ID BYTES [B],
  FIRST_PATCH INT64 [B], HAS_VIDEO BOOL [B] + VIDEO FP32 [-1, P, Dv] (the patches of the streams with
  video, in order), PREVIOUS FP32 [-1, D, P] with PREVIOUS_COUNT INT64 [B] (each stream's rows, in
  order), HAS_TEXT BOOL [B] + TEXT BYTES [B] ("" where absent) -> H FP32 [-1, C] (every stream's
  patches in order) and LOST BYTES [B] ("" or why the stream's state is lost; its H rows are zeros).
  END BOOL [1] true frees the named streams' states and returns no rows. Everything but STREAM_ID is
  optional to Triton (an END request carries nothing else); the model checks what a step needs and
  answers bad input with INVALID_ARGUMENT.
- locdit: dynamic batching up to `max_batch` rows: H FP32 [C], CONTEXT FP32 [D, context_frames],
  SEED INT64 [1], PATCH INT64 [1], STEPS INT32 [1], GUIDANCE FP32 [2] (h, context weight) ->
  Z FP32 [D, P]. The model groups the rows of all requests of a batch by (steps, guidance) and runs
  each group as one batched call, so patches of many streams and callers share the solver.
- vae_decoder: dynamic batching: WINDOW FP32 [D, -1] -> AUDIO FP32 [4, P·hop], grouped by window length.

Why the spatial LM's state lives in the LM model instance: Triton's implicit sequence state does not
exist for the python backend (DESIGN §7), so the model keeps its per-stream KV caches itself
(`backend.LMStates`), in ONE instance so every request of a stream finds them. Nothing is lost for
good when that state goes (restart, eviction, a request that reaches another pod): the model names
the stream in LOST, the client returns an `LMStateLostError` for it, and `stages.SpatialLMStage`
replays the stream from patch 0 with the inputs it stored. The streams of a request are one batch
rather than one request each because the LM has no dynamic batcher (max_batch_size 0: its state
is keyed by stream, not by batch row), and the stage has every ready stream of its call at hand.
Scaling out routes a stream to one Triton pod by stream id; a stream that lands elsewhere is only
slower (one replay), never wrong.
"""

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from swansphere import storage
from swansphere.checkpoint import checked_config
from swansphere.errors import InputError
from swansphere.models.config_io import config_from_dict, config_to_dict
from swansphere.models.swansphere import SwanSphereConfig
from swansphere.serving.backend import LMStep
from swansphere.serving.stages import LOCDIT, SPATIAL_LM, STAGES, VAE_DECODER, VIDEO_ENCODER

CHECKPOINT_FILE = "checkpoint.safetensors"
CONFIG_FILE = "swansphere.json"
VERSION = "1"
LM_INPUTS = (
    "STREAM_ID",
    "FIRST_PATCH",
    "HAS_VIDEO",
    "VIDEO",
    "PREVIOUS",
    "PREVIOUS_COUNT",
    "HAS_TEXT",
    "TEXT",
)
"""The spatial_lm inputs of a step request (an END request carries STREAM_ID and END)."""
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
MAX_QUEUE_DELAY_US = 0
"""How long the dynamic batcher waits for more rows: not at all. The stages send whole batches (every
stream's patch a worker received), and rows that arrive while an instance computes still join its
next execution; a 2 ms wait cost 2.4 ms of queue time per request and 4 stages' worth per patch."""
_MODEL_SOURCE = Path(__file__).with_name("triton_model.py")


def export_repository(
    checkpoint_uri: str | Path,
    out_dir: str | Path,
    max_batch: int = 16,
    instances: int = 1,
    kind: str = "cpu",
    checkpoint_location: str | None = None,
) -> dict[str, Any]:
    """Write the four-model repository of a checkpoint (local path or s3:// URI) into `out_dir`;
    returns a summary (paths, sha256, settings). Existing files of the same names are replaced; nothing
    is written unless every argument is valid and the checkpoint loads as a model.

    `checkpoint_location` is where the models load the checkpoint from: by default the copy at the
    repository root (a relative path). A repository Triton reads from S3 needs an absolute location
    (an s3:// URI or a path mounted in the Triton pod): Triton copies only each model's own folder."""
    if max_batch < 1:
        raise InputError(f"max batch must be >= 1, got {max_batch}")
    if instances < 1:
        raise InputError(f"instances must be >= 1, got {instances}")
    if kind not in KINDS:
        raise InputError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if storage.is_s3(out_dir):
        raise InputError(
            f"the repository is written to a local folder, not {out_dir}: export it here, then upload "
            f"it (e.g. aws s3 sync OUT {out_dir})"
        )
    if checkpoint_location is not None and not (
        checkpoint_location.startswith("s3://") or Path(checkpoint_location).is_absolute()
    ):
        raise InputError(
            f"checkpoint location must be an s3:// URI or an absolute path, got {checkpoint_location!r}"
        )
    # Nothing is written until the checkpoint loads as a model: a damaged file would otherwise only
    # fail later, when Triton loads the repository.
    data = storage.read_bytes(checkpoint_uri)
    config = checked_config(data, checkpoint_uri)
    sha256 = hashlib.sha256(data).hexdigest()
    out = Path(out_dir)
    _write(out / CHECKPOINT_FILE, data)
    summary = {"config": config_to_dict(config), "checkpoint_sha256": sha256, "source": str(checkpoint_uri)}
    _write(out / CONFIG_FILE, (json.dumps(summary, indent=2) + "\n").encode())
    location = checkpoint_location or CHECKPOINT_FILE
    for stage in STAGES:
        text = model_config(stage, config, sha256, max_batch, instances, kind, location)
        _write(out / stage / "config.pbtxt", text.encode())
        (out / stage / VERSION).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_MODEL_SOURCE, out / stage / VERSION / "model.py")
    return {
        "repository": str(out),
        "models": list(STAGES),
        "checkpoint": str(out / CHECKPOINT_FILE),
        "checkpoint_sha256": sha256,
        "source": str(checkpoint_uri),
        "max_batch": max_batch,
        "instances": instances,
        "kind": kind,
    }


def model_config(
    stage: str,
    config: SwanSphereConfig,
    sha256: str,
    max_batch: int,
    instances: int,
    kind: str,
    checkpoint: str = CHECKPOINT_FILE,
) -> str:
    """config.pbtxt of one stage (see the module docstring for the tensors)."""
    P, D = config.patch_frames, config.vae.latent_dim
    Dv, C = config.svac.proj_dim, config.lm.d_model
    h, w = config.svac.video.frame_size
    if stage == VIDEO_ENCODER:
        batch, instances = max_batch, 1
        inputs = [
            _tensor("FRAMES", "UINT8", [-1, 3, h, w]),
            _tensor("STREAM_ID", "STRING", [1]),
            _tensor("FIRST", "INT64", [1]),
            _tensor("CONTEXT", "INT64", [1]),
            _tensor("RESUME", "BOOL", [1]),
        ]
        outputs = [_tensor("TOKENS", "FP32", [-1, Dv]), _tensor("LOST", "STRING", [1])]
    elif stage == SPATIAL_LM:
        batch, instances = 0, 1
        inputs = [_tensor("STREAM_ID", "STRING", [-1])] + [
            _tensor(name, dtype, dims, optional=True)
            for name, dtype, dims in (
                ("FIRST_PATCH", "INT64", [-1]),
                ("HAS_VIDEO", "BOOL", [-1]),
                ("VIDEO", "FP32", [-1, P, Dv]),
                ("PREVIOUS", "FP32", [-1, D, P]),
                ("PREVIOUS_COUNT", "INT64", [-1]),
                ("HAS_TEXT", "BOOL", [-1]),
                ("TEXT", "STRING", [-1]),
                ("END", "BOOL", [1]),
            )
        ]
        outputs = [_tensor("H", "FP32", [-1, C]), _tensor("LOST", "STRING", [-1])]
    elif stage == LOCDIT:
        batch = max_batch
        inputs = [
            _tensor("H", "FP32", [C]),
            _tensor("CONTEXT", "FP32", [D, config.locdit.context_frames]),
            _tensor("SEED", "INT64", [1]),
            _tensor("PATCH", "INT64", [1]),
            _tensor("STEPS", "INT32", [1]),
            _tensor("GUIDANCE", "FP32", [2]),
        ]
        outputs = [_tensor("Z", "FP32", [D, P])]
    elif stage == VAE_DECODER:
        batch = max_batch
        inputs = [_tensor("WINDOW", "FP32", [D, -1])]
        outputs = [_tensor("AUDIO", "FP32", [4, config.patch_samples])]
    else:
        raise InputError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    parameters = {"stage": stage, "checkpoint": checkpoint, "checkpoint_sha256": sha256}
    lines = [
        f'name: "{stage}"',
        'backend: "python"',
        f"max_batch_size: {batch}",
        "input [",
        ",\n".join(inputs),
        "]",
        "output [",
        ",\n".join(outputs),
        "]",
        f"instance_group [ {{ count: {instances} kind: {KINDS[kind]} }} ]",
    ]
    if batch:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US} }}")
    lines += [f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}' for k, v in parameters.items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Repository:
    """What a repository's swansphere.json says of the checkpoint it serves."""

    config: SwanSphereConfig
    model: str
    """Which model, as Summary.model and Admin.Status say it: the checkpoint the repository was
    exported from and the start of its sha256, so a client can tell two versions apart (the
    repository's own location says neither)."""


def read_repository(repository: str | Path) -> Repository:
    """The swansphere.json of a repository (local or s3://), read once."""
    uri = storage.join(repository, CONFIG_FILE)
    try:
        summary = json.loads(storage.read_bytes(uri))
        model = f"{PurePosixPath(str(summary['source'])).name} sha256:{summary['checkpoint_sha256'][:12]}"
        return Repository(config_from_dict(SwanSphereConfig, summary["config"]), model)
    except (KeyError, ValueError, TypeError) as err:
        raise InputError(f"{uri}: not a SwanSphere repository config ({err})") from None


def checkpoint_path(model_dir: str | Path, parameter: str) -> str:
    """Where a model's `checkpoint` parameter points: s3:// URIs and absolute paths as they are,
    relative paths from the repository root (the model folder's parent)."""
    if parameter.startswith("s3://") or Path(parameter).is_absolute():
        return parameter
    return str(Path(model_dir).parent / parameter)


def lm_request(steps: Sequence[LMStep]) -> dict[str, np.ndarray]:
    """The spatial_lm inputs that step `steps`' streams in one request."""
    video = [np.asarray(step.video, np.float32) for step in steps if step.video is not None]
    arrays = {
        "STREAM_ID": np.array([step.stream_id.encode() for step in steps], dtype=np.object_),
        "FIRST_PATCH": np.array([step.first_patch for step in steps], np.int64),
        "HAS_VIDEO": np.array([step.video is not None for step in steps]),
        "PREVIOUS": np.concatenate([np.asarray(step.previous, np.float32) for step in steps]),
        "PREVIOUS_COUNT": np.array([len(step.previous) for step in steps], np.int64),
        "HAS_TEXT": np.array([step.text is not None for step in steps]),
        "TEXT": np.array([(step.text or "").encode() for step in steps], dtype=np.object_),
    }
    if video:
        arrays["VIDEO"] = np.concatenate(video)
    return arrays


def lm_steps(arrays: dict[str, np.ndarray | None]) -> list[LMStep]:
    """The steps of a spatial_lm request's inputs (`lm_request`'s inverse); InputError when they do
    not fit together."""
    missing = [name for name in LM_INPUTS if name != "VIDEO" and arrays.get(name) is None]
    if missing:
        raise InputError(f"spatial_lm: missing input {', '.join(missing)}")
    streams = lm_streams(arrays)
    columns = {name: arrays[name].reshape(-1) for name in LM_INPUTS if name not in ("VIDEO", "PREVIOUS")}
    if any(len(column) != len(streams) for column in columns.values()):
        raise InputError(f"spatial_lm: every per-stream input must have {len(streams)} entries")
    counts, first = columns["PREVIOUS_COUNT"], columns["FIRST_PATCH"]
    previous = arrays["PREVIOUS"]
    if (counts < 0).any() or counts.sum() != len(previous):
        raise InputError(f"spatial_lm: PREVIOUS_COUNT {counts.tolist()} does not split {len(previous)} rows")
    patches = counts + (first == 0)
    has_video = columns["HAS_VIDEO"].astype(bool)
    video = arrays.get("VIDEO")
    video_rows = int(patches[has_video].sum())
    if video_rows and (video is None or len(video) != video_rows):
        got = 0 if video is None else len(video)
        raise InputError(
            f"spatial_lm: VIDEO has {got} rows, the streams with video have {video_rows} patches"
        )
    previous_at = np.concatenate([[0], np.cumsum(counts)])
    video_at = np.concatenate([[0], np.cumsum(np.where(has_video, patches, 0))])
    return [
        LMStep(
            stream,
            int(first[i]),
            video[video_at[i] : video_at[i + 1]] if has_video[i] and video is not None else None,
            previous[previous_at[i] : previous_at[i + 1]],
            _utf8(columns["TEXT"][i]) if columns["HAS_TEXT"][i] else None,
        )
        for i, stream in enumerate(streams)
    ]


def lm_streams(arrays: dict[str, np.ndarray | None]) -> list[str]:
    """The stream ids a spatial_lm request names."""
    if arrays.get("STREAM_ID") is None:
        raise InputError("spatial_lm: missing input STREAM_ID")
    return [_utf8(value) for value in arrays["STREAM_ID"].reshape(-1)]


def _utf8(value: object) -> str:
    try:
        return value.decode() if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise InputError("spatial_lm: text inputs must be UTF-8") from None


def _tensor(name: str, dtype: str, dims: list[int], optional: bool = False) -> str:
    extra = " optional: true" if optional else ""
    return f'  {{ name: "{name}" data_type: TYPE_{dtype} dims: {dims}{extra} }}'


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as err:
        raise InputError(f"{path}: cannot write ({err.strerror})") from None
