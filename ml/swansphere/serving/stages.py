"""The four stages of DESIGN §1 as plain message handlers: messages in, (topic, message) pairs out.

Nothing here knows about gRPC, Redis, Kafka or Triton: a stage gets its model compute from a
`Backend`, keeps per-stream state in a `StateStore`, and returns what to publish. Messages may arrive
in any order and more than once (at-least-once transports, several workers per stage), so every
stage files what it receives by index and advances a stream only under the stream's lock, emitting
each output once per success. Topics:

    video_encoder  frames (uint8 equirect, by first frame index), end,
                   encode (from itself: encode the frames filed from index on)  -> spatial_lm
    spatial_lm     start (settings), tokens, end, latents (z_{t-1} from LocDiT) -> locdit
    locdit         patch t: h_t and the recent clean latents                    -> spatial_lm, vae_decoder
    vae_decoder    latents window of patch t                                     -> out.{stream_id}
    out.{stream}   chunk t: FOA (4, n) float32, read by the gateway (or embedded driver)
"""

import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from swansphere.conventions import SAMPLE_RATE, VIDEO_FPS
from swansphere.errors import InputError
from swansphere.models.sampler import DEFAULT_GUIDANCE, Guidance
from swansphere.models.svac import nearest_steps
from swansphere.models.vae import decoder_context_frames
from swansphere.serving.backend import Backend, FrameWindow, LMStateLostError, LMStep, VideoStateLostError
from swansphere.serving.envelope import Envelope, decode, encode
from swansphere.serving.state import CLOSED, Section, StateStore
from swansphere.video import model_pixels

VIDEO_ENCODER, SPATIAL_LM, LOCDIT, VAE_DECODER = "video_encoder", "spatial_lm", "locdit", "vae_decoder"
STAGES = (VIDEO_ENCODER, SPATIAL_LM, LOCDIT, VAE_DECODER)
"""Stage names: also their input topics, Triton model names and service names."""
MAX_STEPS = 200
"""Upper bound on solver steps per patch; more buys nothing and would stall a stream."""
MAX_DURATION_S = 600.0
"""Longest stream, video or text-only (10 minutes)."""
MIN_DURATION_S = 1 / SAMPLE_RATE
"""Shortest text-only stream: one sample."""
MAX_VIDEO_FRAMES = round(MAX_DURATION_S * VIDEO_FPS)
"""Most frames a video stream may send (10 minutes at 4 fps)."""

log = logging.getLogger(__name__)


def out_topic(stream_id: str) -> str:
    """Where a stream's FOA chunks go; the gateway reads it and deletes it at the end."""
    return f"out.{stream_id}"


@dataclass(frozen=True)
class GenerationSettings:
    """What a caller may choose per stream."""

    seed: int = 0
    """Same seed, same audio, however the stream is chunked or batched with others."""
    steps: int = 20
    """Euler steps per patch (paper §4.2: 20)."""
    guidance: Guidance = field(default_factory=lambda: DEFAULT_GUIDANCE)

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= MAX_STEPS:
            raise InputError(f"steps must be in 1..{MAX_STEPS}, got {self.steps}")


@dataclass(frozen=True)
class StreamSpec:
    """One stream: its settings and inputs; travels as JSON in the `start` message."""

    stream_id: str
    text: str | None = None
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    duration_s: float | None = None
    """Text-only streams: the length; video streams end with the video."""

    def __post_init__(self) -> None:
        if self.duration_s is not None and not MIN_DURATION_S <= self.duration_s <= MAX_DURATION_S:
            raise InputError(
                f"duration must be in [{MIN_DURATION_S:.3g}, {MAX_DURATION_S:g}] seconds (one sample to 10 "
                f"minutes), got {self.duration_s}"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> "StreamSpec":
        fields = json.loads(text)
        settings = fields.pop("settings")
        guidance = Guidance(**settings.pop("guidance"))
        return cls(**fields, settings=GenerationSettings(**settings, guidance=guidance))


class Stage:
    """Common bookkeeping: wall time spent in the backend, per stage, for metrics and `bench`, and the
    streams whose state the backend had lost."""

    name = ""

    def __init__(self, backend: Backend, store: StateStore):
        self.backend = backend
        self.store = store
        self.config = backend.config
        self.seconds: dict[str, float] = defaultdict(float)
        self.on_states_lost: Callable[[int], None] | None = None
        """Told how many streams of a call the backend had no state for (a Triton restart, an eviction,
        another pod) and the stage rebuilt it for: the service's metric. Each costs a replay (LM) or a
        context window (video encoder); a steady rate means the state budget or routing is off."""

    def _states_lost(self, streams: int) -> None:
        log.info("backend state lost, rebuilding it", extra={"stage": self.name, "streams": streams})
        if self.on_states_lost is not None:
            self.on_states_lost(streams)

    def handle(self, messages: list[Envelope]) -> list[tuple[str, Envelope]]:
        """Process a batch of messages (possibly of several streams); returns what to publish."""
        raise TypeError(f"{type(self).__name__} must define handle()")

    def replay(self, messages: list[Envelope]) -> list[tuple[str, Envelope]]:
        """What a worker that died before acking `messages` may have computed from them but not
        published. A stateful stage advances its stream's state before its worker publishes, so the
        redelivered message alone would find nothing left to do. Duplicates are harmless (consumers
        are idempotent on `Envelope.key`). Stateless stages recompute instead: nothing to replay."""
        return []


FIRST_CALL_FRAMES = 2
"""Frames a stream's first video-encoder call encodes: 0.5 s of video, what its first two patches
(2 × 186 ms of audio) look at; the rest of a burst waits for the next call (see `handle`)."""

FRAMES_ENCODED = "frames"
"""The video encoder's count of a stream's frames encoded, in the stream's state; the gateway holds
a stream's next frames back while too many of those it sent are not encoded yet."""

MAX_CALL_FRAMES = 64
"""Most new frames of one stream a later call encodes (16 s of video). A client that sends a long
clip at once would otherwise have all of it encoded in one call, its memory growing with the clip
(2400 frames for 10 minutes) and every other stream's video waiting behind it; the rest follows by
the stage's own `encode` message, each call going on from the encoder's state of the stream."""


@dataclass
class _EncoderJob:
    """One stream's share of a video-encoder call: frames first .. count − 1 of which done .. count − 1
    are new; `more`: frame `count` is filed already (the stage sends itself an `encode` for it)."""

    stream: str
    first: int
    done: int
    count: int
    more: bool
    window: np.ndarray  # (count − first, 3, h, w) uint8


class VideoEncoderStage(Stage):
    """Equirect frames -> SVAC video tokens, in frame order, whatever order the frame messages take.

    The encoder is block-causal with a sliding window of `max_frames` steps in each of its `depth`
    layers and no absolute time positions, so a token depends on the depth·(max_frames − 1) frames
    before it and on nothing earlier. The backend keeps each stream's encoder state (its layers'
    keys and values of that window), so the stage sends a stream's new frames alone; where the
    backend has lost the state it sends them again after just that much context, read from the store,
    which gives exactly the tokens of encoding the whole prefix. Either way a call costs what its new
    frames cost, not what the stream so far does.
    """

    name = VIDEO_ENCODER

    def __init__(self, backend: Backend, store: StateStore):
        super().__init__(backend, store)
        video = self.config.svac.video
        if video.tubelet_frames != 1:
            raise ValueError(
                f"the video encoder stage streams one token per frame, not {video.tubelet_frames}"
            )
        self.context_frames = video.depth * (video.max_frames - 1)
        """Frames before the new ones that their tokens depend on."""

    def handle(self, messages: list[Envelope]) -> list[tuple[str, Envelope]]:
        """Files every message's frames, then encodes each stream's new frames in one call; a
        stream's `end` goes on after its tokens.

        A stream's first call encodes only its first `FIRST_CALL_FRAMES` frames and sends the stage
        an `encode` message for the rest: a client that sends a burst of frames would otherwise keep
        the stage busy with its whole burst while other streams wait for their first chunk. The next
        call goes on from the encoder's state, so the split costs a call, not compute. For the same
        reason a call that makes some stream's first tokens leaves every backlog (more
        than `FIRST_CALL_FRAMES` new frames) to the next call, by an `encode` message: the tokens of
        a call are published together, so a new stream's first ones would otherwise wait for another
        stream's burst (4 streams that each sent their clip at once: the last three streams' first
        tokens came 120 ms after the first's). Live streams (a frame or two per call) never wait.
        """
        ends, filed = [], []
        for message in messages:
            if message.kind == "end":
                ends.append(message)
            elif message.kind == "frames":
                filed += self._frames(message)
            elif message.kind != "encode":
                raise InputError(f"video_encoder: unknown message kind {message.kind!r}")
        streams = list(dict.fromkeys(m.stream_id for m in messages if m.kind != "end"))
        out: list[tuple[str, Envelope]] = []
        counts = {stream: [FRAMES_ENCODED, CLOSED] for stream in streams}
        with self.store.lock_each(streams, self.name, file=filed, read=counts) as section:
            closed = {stream for stream, (_, mark) in section.values.items() if mark is not None}
            work = self._new_frames({s: v for s, v in section.values.items() if s not in closed})
            backlog = []
            if any(job.done == 0 for job in work):
                backlog = [job for job in work if job.count - job.done > FIRST_CALL_FRAMES]
                work = [job for job in work if job not in backlog]
            start = time.perf_counter()
            tokens = self._encode(work)
            self.seconds[self.name] += time.perf_counter() - start
            out += self._commit(work, tokens, section)
        out += [(VIDEO_ENCODER, Envelope(job.stream, "encode", job.done)) for job in backlog]
        _forget(self.store, closed)
        return out + [(SPATIAL_LM, message) for message in ends]

    def _frames(self, message: Envelope) -> list[tuple[str, str, bytes]]:
        """What filing a frames message stores: (stream, key, value) of each of its frames."""
        pixels = model_pixels(message.tensors["frames"], self.config.svac.video.frame_size)  # (T, 3, h, w)
        return [
            (message.stream_id, f"frame@{message.index + i}", _pack(frame)) for i, frame in enumerate(pixels)
        ]

    def _new_frames(self, counts: dict[str, list[bytes | None]]) -> list[_EncoderJob]:
        """The windows of each stream's new contiguous frames, at most `FIRST_CALL_FRAMES` in its
        first call and `MAX_CALL_FRAMES` in any later one (under the streams' locks), from each
        stream's count of frames encoded (stream -> [count, ...]); none for a stream without new frames.
        One round trip for all the streams."""
        streams = list(counts)
        done = {stream: int(counts[stream][0] or 0) for stream in streams}
        limit = {
            stream: done[stream] + (FIRST_CALL_FRAMES if done[stream] == 0 else MAX_CALL_FRAMES)
            for stream in streams
        }
        # One frame past the limit tells whether more are waiting.
        stored = self.store.get_each(
            {stream: [f"frame@{i}" for i in range(done[stream], limit[stream] + 1)] for stream in streams}
        )
        jobs = []
        for stream in streams:
            blobs, start, end = stored[stream], done[stream], limit[stream]
            count = start + blobs.index(None) if None in blobs[: end - start] else end
            if count > start:
                window = np.stack([_unpack(blob) for blob in blobs[: count - start]])
                more = blobs[count - start] is not None
                jobs.append(_EncoderJob(stream, start, start, count, more, window))
        return jobs

    def _encode(self, jobs: list[_EncoderJob]) -> list[np.ndarray]:
        """Tokens of each job's new frames. The new frames alone go first, from the encoder's state of
        each stream (`FrameWindow.resume`); the streams whose state the encoder lacks (a restart, an
        eviction, another instance) go again with their context frames, read from the store."""
        tokens = self._encode_windows(jobs, resume=True)
        lost = [i for i, t in enumerate(tokens) if isinstance(t, VideoStateLostError)]
        if lost:
            self._states_lost(len(lost))
        again = self._encode_windows(self._with_context([jobs[i] for i in lost])) if lost else []
        for i, t in zip(lost, again, strict=True):
            if isinstance(t, VideoStateLostError):  # a window with its context cannot be lost
                raise t
            tokens[i] = t
        return tokens

    def _encode_windows(
        self, jobs: list[_EncoderJob], resume: bool = False
    ) -> list[np.ndarray | VideoStateLostError]:
        """One backend call per window length and context, so the streams batch together."""
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, job in enumerate(jobs):
            groups[len(job.window), job.done - job.first].append(i)
        out: list[np.ndarray | VideoStateLostError] = [np.empty(0)] * len(jobs)
        for (_, context), rows in groups.items():
            windows = [
                FrameWindow(jobs[i].stream, jobs[i].first, context, resume and jobs[i].done > 0) for i in rows
            ]
            tokens = self.backend.video_encoder(np.stack([jobs[i].window for i in rows]), windows)
            for i, t in zip(rows, tokens, strict=True):
                out[i] = t
        return out

    def _with_context(self, jobs: list[_EncoderJob]) -> list[_EncoderJob]:
        """The jobs with the `context_frames` before their new frames (fewer at a stream's start) in
        front of their windows; one round trip for all the streams."""
        first = {job.stream: max(0, job.done - self.context_frames) for job in jobs}
        stored = self.store.get_each(
            {job.stream: [f"frame@{i}" for i in range(first[job.stream], job.done)] for job in jobs}
        )
        out = []
        for job in jobs:
            blobs = stored[job.stream]
            if any(blob is None for blob in blobs):
                lost = f"{first[job.stream]}..{job.done - 1}"
                raise InputError(f"video_encoder: stream {job.stream} lost frames {lost} (expired)")
            window = np.concatenate([np.stack([_unpack(blob) for blob in blobs]), job.window])
            out.append(replace(job, first=first[job.stream], window=window))
        return out

    def _commit(
        self, jobs: list[_EncoderJob], tokens: list[np.ndarray], section: Section
    ) -> list[tuple[str, Envelope]]:
        """Moves each stream's state past its new frames, with the release of the locks; what to
        publish."""
        # Kept for `replay` before the state moves on.
        self.store.set_each(
            {job.stream: {f"encoded@{job.done}": _pack(t)} for job, t in zip(jobs, tokens, strict=True)}
        )
        self.store.append_each("encoded", {job.stream: f"{job.done}:{job.count}".encode() for job in jobs})
        section.set_each({job.stream: {FRAMES_ENCODED: str(job.count).encode()} for job in jobs})
        # Frames before the context of a stream's next frames are never read again (a fallback reads
        # only that context): a 10-minute stream at the paper's frame size would keep 720 MB.
        ctx = self.context_frames
        leaving = {job.stream: range(max(0, job.done - ctx), max(0, job.count - ctx)) for job in jobs}
        section.unset_each({stream: [f"frame@{i}" for i in old] for stream, old in leaving.items() if old})
        out = []
        for job, t in zip(jobs, tokens, strict=True):
            out.append((SPATIAL_LM, Envelope(job.stream, "tokens", job.done, tensors={"tokens": t})))
            if job.more:
                out.append((VIDEO_ENCODER, Envelope(job.stream, "encode", job.count)))
        return out

    def replay(self, messages: list[Envelope]) -> list[tuple[str, Envelope]]:
        """Every token message already sent that covers a redelivered message's frames."""
        out = []
        for message in messages:
            if message.kind == "end":
                continue
            stream, first = message.stream_id, message.index
            # An `encode` message asked for every frame from its index on.
            end = first + len(message.tensors["frames"]) if message.kind == "frames" else math.inf
            for item in self.store.items(stream, "encoded"):
                start, stop = (int(part) for part in item.decode().split(":"))
                blob = self.store.get(stream, f"encoded@{start}")
                if start < end and stop > first and blob is not None:
                    out.append(
                        (SPATIAL_LM, Envelope(stream, "tokens", start, tensors={"tokens": _unpack(blob)}))
                    )
        return out


@dataclass
class _Tokens:
    """What a patch reads of a stream's video tokens: the token list from position `chunk` on, whose
    first chunk starts at video frame `frame`. Earlier chunks hold frames no later patch looks at, so
    a patch's reads do not grow with the stream (10 minutes are 2400 frames)."""

    chunk: int
    frame: int
    chunks: list[np.ndarray]

    @property
    def received(self) -> int:
        """Frames with tokens, contiguous from frame 0."""
        return self.frame + sum(len(chunk) for chunk in self.chunks)

    def rows(self, frames: np.ndarray) -> np.ndarray:
        """Tokens (n, Dv) of video frames (n,), clipped to the last received (the nearest rule)."""
        if not self.chunks:
            raise InputError("spatial_lm: a video stream has no video tokens yet")
        return np.concatenate(self.chunks)[np.minimum(frames, self.received - 1) - self.frame]

    def start_of(self, frame: int) -> tuple[int, int]:
        """The list position of the chunk holding `frame` (the last one if none does), and its first frame."""
        chunk, start = self.chunk, self.frame
        for tokens in self.chunks[:-1]:
            if start + len(tokens) > frame:
                break
            chunk, start = chunk + 1, start + len(tokens)
        return chunk, start


@dataclass
class _LMJob:
    """One stream's next patch t, read under its lock: what planning it needs."""

    stream: str
    spec: StreamSpec
    t: int
    tokens: _Tokens
    recent: np.ndarray | None
    """The clean latents before patch t (`_recent_latents`), z_{t-1} last; None at t = 0."""
    total: int | None
    """The stream's samples once known."""
    ready: bool
    """Patch t can be planned now: its video tokens and z_{t-1} exist."""


class SpatialLMStage(Stage):
    """Plans patch t once its video tokens (no look-ahead) and z_{t-1} exist: h_t for LocDiT."""

    name = SPATIAL_LM

    def __init__(self, backend: Backend, store: StateStore):
        super().__init__(backend, store)
        P = self.config.patch_frames
        recent_frames = max(self.config.locdit.context_frames, decoder_context_frames(self.config.vae))
        self.recent_patches = math.ceil(recent_frames / P)
        """Clean patches sent with each request: LocDiT's boundary context and the decoder's."""

    def handle(self, messages: list[Envelope]) -> list[tuple[str, Envelope]]:
        """Files every message, then advances each of their streams by one patch, all of them in one
        LM call (a burst of one stream's token messages costs one planning pass, not one per message;
        patches of several streams cost one batched LM step). The store's round trips are per call,
        not per stream: filing, locking and the first read in one, each further read, and the write
        with unlocking in one."""
        filed = []
        for message in messages:
            stream = message.stream_id
            if message.kind == "start":
                filed.append((stream, "spec", message.meta["spec"].encode()))
            elif message.kind == "tokens":
                filed.append((stream, f"tokens@{message.index}", _pack(message.tensors["tokens"])))
            elif message.kind == "end":
                filed.append((stream, "end_frames", str(int(message.meta["frames"])).encode()))
            elif message.kind == "latents":
                filed.append((stream, f"z@{message.index}", _pack(message.tensors["z"])))
            else:
                raise InputError(f"spatial_lm: unknown message kind {message.kind!r}")
        streams = sorted(dict.fromkeys(message.stream_id for message in messages))
        values = {stream: self.STREAM_VALUES for stream in streams}
        with self.store.lock_each(streams, self.name, file=filed, read=values) as section:
            closed = {
                stream for stream, stream_values in section.values.items() if stream_values[-1] is not None
            }
            read = self._next_patches({s: v for s, v in section.values.items() if s not in closed})
            jobs = [job for job in read if job.ready]
            start = time.perf_counter()
            hs = self._plan(jobs)
            self.seconds[self.name] += time.perf_counter() - start
            out = [(LOCDIT, message) for message in self._commit(jobs, hs, section)]
            for job in read:
                # Its last patch planned: the stream's LM state is freed.
                if job.total is not None and job.t + job.ready == math.ceil(
                    job.total / self.config.patch_samples
                ):
                    self.backend.end_stream(job.stream)
        for stream in closed:
            self.backend.end_stream(stream)
        _forget(self.store, closed)
        return out

    STREAM_VALUES = ("spec", "next", "end_frames", "tokens_from", CLOSED)
    """A stream's values that planning its next patch starts from, read as its lock is taken; the
    last says whether the stream is closed."""

    def _next_patches(self, values: dict[str, list[bytes | None]]) -> list[_LMJob]:
        """Each started stream's next patch from its `STREAM_VALUES`, ready if it can be planned now
        (under the streams' locks). At most one a stream: patch t + 1 waits for z_t, which LocDiT
        makes from this call's h_t. Three more state round trips for all the streams (their token
        lists, the next token chunks, their recent latents) when nothing new arrived on a token list,
        however many patches the streams have."""
        specs, starts = {}, {}
        for stream, (spec_json, _, _, tokens_from, _) in values.items():
            if spec_json is not None:  # None before the stream's start message
                specs[stream] = StreamSpec.from_json(spec_json)
                chunk, frame = (int(part) for part in (tokens_from or b"0:0").decode().split(":"))
                starts[stream] = (chunk, frame)
        tokens = self._tokens(starts)
        jobs, ends = [], {}
        for stream, spec in specs.items():
            _, next_patch, end_frames, _, _ = values[stream]
            ends[stream] = None if end_frames is None else int(end_frames)
            total = self._total_samples(spec, ends[stream])
            jobs.append(_LMJob(stream, spec, int(next_patch or 0), tokens[stream], None, total, ready=False))
        plannable = [
            job
            for job in jobs
            if job.t < self._ready_patches(job.t, job.tokens.received, job.total, ends[job.stream])
        ]
        recent = self._recent_latents({job.stream: job.t for job in plannable})
        for job in plannable:
            job.recent = recent[job.stream]  # z_{t-1} last
            job.ready = job.t == 0 or job.recent is not None
        return jobs

    def _plan(self, jobs: list[_LMJob]) -> list[np.ndarray]:
        """h_t of every job from the backend's LM states, in one call; the streams whose state is lost
        (a restart, an eviction, another pod) are replayed from patch 0, together, in a second."""
        steps = [self._lm_step(job, job.t) for job in jobs]
        results = self.backend.spatial_lm(steps) if steps else []
        lost = [i for i, result in enumerate(results) if isinstance(result, LMStateLostError)]
        if lost:
            self._states_lost(len(lost))
        replayed = self.backend.spatial_lm([self._lm_step(jobs[i], 0) for i in lost]) if lost else []
        for i, result in zip(lost, replayed, strict=True):
            if isinstance(result, LMStateLostError):  # a replay starts the stream: it cannot be lost
                raise result
            results[i] = result
        return [np.asarray(result)[-1] for result in results]

    def _lm_step(self, job: _LMJob, first: int) -> LMStep:
        """The LM's input for patches first .. job.t: the next patch alone, or the whole stream so far."""
        # A replay reads the stream's tokens from frame 0; the next patch reads from where it needs.
        tokens = job.tokens if first == job.t else self._tokens({job.stream: (0, 0)})[job.stream]
        video = None if job.spec.duration_s is not None else self._patch_tokens(tokens, first, job.t + 1)
        if first == job.t:
            previous = None if job.recent is None else job.recent[-1:]
        else:
            previous = self._latents({job.stream: (first, job.t - first)})[job.stream]
        empty = np.zeros((0, *self._latent_shape()), np.float32)
        return LMStep(job.stream, first, video, empty if previous is None else previous, job.spec.text)

    def _commit(self, jobs: list[_LMJob], hs: list[np.ndarray], section: Section) -> list[Envelope]:
        """Moves each stream past its patch t, in one write with the release of the locks; the
        patches' requests to LocDiT."""
        values, requests = {}, []
        for job, h in zip(jobs, hs, strict=True):
            # The first token chunk patch t + 1 reads: where the nearest rule puts its first latent frame.
            needed = int(self._token_frames(job.t + 1, job.t + 2)[0])
            chunk, frame = job.tokens.start_of(min(needed, max(job.tokens.received - 1, 0)))
            # h_t kept for `replay` in the same write that moves the state on
            values[job.stream] = {
                f"h@{job.t}": _pack(h),
                "next": str(job.t + 1).encode(),
                "tokens_from": f"{chunk}:{frame}".encode(),
            }
            requests.append(self._patch_message(job.stream, job.spec, job.t, h, job.total, job.recent))
        section.set_each(values)
        return requests

    def replay(self, messages: list[Envelope]) -> list[tuple[str, Envelope]]:
        """The patch in flight of each redelivered message's stream: planned, its latents not back.
        Patch t + 1 waits for z_t, so a stream has at most one."""
        out = []
        for stream in dict.fromkeys(message.stream_id for message in messages):
            with self.store.lock(stream, self.name):
                spec_json, next_patch, end = self.store.get_many(stream, ["spec", "next", "end_frames"])
                t = int(next_patch or 0) - 1
                h, z = self.store.get_many(stream, [f"h@{t}", f"z@{t}"])
                if spec_json is None or h is None or z is not None:
                    continue
                spec = StreamSpec.from_json(spec_json)
                total = self._total_samples(spec, None if end is None else int(end))
                recent = self._recent_latents({stream: t})[stream]
                out.append((LOCDIT, self._patch_message(stream, spec, t, _unpack(h), total, recent)))
        return out

    def _patch_message(
        self,
        stream: str,
        spec: StreamSpec,
        t: int,
        h: np.ndarray,
        total: int | None,
        recent: np.ndarray | None,
    ) -> Envelope:
        """Patch t's request to LocDiT; `recent`: the clean latents before it (n, D, P), None at t = 0."""
        D = self.config.vae.latent_dim
        recent_frames = np.zeros((D, 0), np.float32) if recent is None else np.concatenate(list(recent), -1)
        first = t * self.config.patch_samples
        samples = (
            self.config.patch_samples if total is None else min(self.config.patch_samples, total - first)
        )
        settings = spec.settings
        meta = {
            "seed": settings.seed,
            "steps": settings.steps,
            "guidance": [settings.guidance.h_weight, settings.guidance.context_weight],
            "first_sample": first,
            "samples": samples,
        }
        return Envelope(stream, "patch", t, meta, {"h": h.astype(np.float32), "recent": recent_frames})

    def _latent_shape(self) -> tuple[int, int]:
        return self.config.vae.latent_dim, self.config.patch_frames

    def _tokens(self, starts: dict[str, tuple[int, int]]) -> dict[str, _Tokens]:
        """Each stream's video tokens from list position `chunk` (starting at video frame `frame`)
        on: stream -> (chunk, frame). Chunks join the list `tokens` once they are contiguous, so a
        patch reads them in one round trip; the list is its own pointer (a retry after a crash between
        two appends recomputes where it ended). Call under the streams' locks."""
        lists = self.store.items_each("tokens", {stream: chunk for stream, (chunk, _) in starts.items()})
        tokens = {
            stream: _Tokens(chunk, frame, [_unpack(blob) for blob in lists[stream]])
            for stream, (chunk, frame) in starts.items()
        }
        waiting = list(tokens)
        while waiting:
            blobs = self.store.get_each({stream: [f"tokens@{tokens[stream].received}"] for stream in waiting})
            found = {stream: blob for stream, (blob,) in blobs.items() if blob is not None}
            if found:
                self.store.append_each("tokens", found)
            for stream, blob in found.items():
                tokens[stream].chunks.append(_unpack(blob))
            waiting = list(found)
        return tokens

    def _recent_latents(self, patches: dict[str, int]) -> dict[str, np.ndarray | None]:
        """The clean latents each stream's patch t carries (`recent_patches` before it): stream -> t;
        None at t = 0."""
        firsts = {stream: max(0, t - self.recent_patches) for stream, t in patches.items()}
        return self._latents({stream: (first, patches[stream] - first) for stream, first in firsts.items()})

    def _latents(self, ranges: dict[str, tuple[int, int]]) -> dict[str, np.ndarray | None]:
        """Each stream's latents of patches first .. first+n-1 (n, D, P): stream -> (first, n); None
        if any is missing or n is 0."""
        keys = {
            stream: [f"z@{i}" for i in range(max(first, 0), first + n)]
            for stream, (first, n) in ranges.items()
        }
        blobs = self.store.get_each(keys)
        out: dict[str, np.ndarray | None] = {}
        for stream, (first, n) in ranges.items():
            missing = first < 0 or n <= 0 or any(blob is None for blob in blobs[stream])
            out[stream] = (
                None if missing else np.stack([_unpack(blob) for blob in blobs[stream] if blob is not None])
            )
        return out

    def _total_samples(self, spec: StreamSpec, end_frames: int | None) -> int | None:
        """The stream's length in samples once known: its duration, or its video's after `end`."""
        if spec.duration_s is not None:
            return round(spec.duration_s * SAMPLE_RATE)
        return None if end_frames is None else round(end_frames / VIDEO_FPS * SAMPLE_RATE)

    def _ready_patches(self, t: int, received: int, total: int | None, end_frames: int | None) -> int:
        """Patches plannable now, given the frames with tokens and the stream's length in samples once
        known: the video frame of their last latent frame has its token (no look-ahead) and they end
        within the video so far; every patch of a text-only stream, and of a video after its end."""
        if total is not None and (end_frames is None or received >= end_frames):
            return math.ceil(total / self.config.patch_samples)
        P, hop = self.config.patch_frames, self.config.vae.hop_length
        while (
            math.floor((t * P + P - 1) * hop / SAMPLE_RATE * VIDEO_FPS) < received
            and (t + 1) * self.config.patch_samples <= received / VIDEO_FPS * SAMPLE_RATE
        ):
            t += 1
        return t

    def _patch_tokens(self, tokens: _Tokens, first: int, end: int) -> np.ndarray:
        """Video tokens of patches first .. end-1, (n, P, Dv), by the causal nearest rule."""
        rows = tokens.rows(self._token_frames(first, end))
        return rows.reshape(end - first, self.config.patch_frames, -1)

    def _token_frames(self, first: int, end: int) -> np.ndarray:
        """The video frame of each latent frame of patches first .. end-1, unclipped."""
        P = self.config.patch_frames
        frame_rate = SAMPLE_RATE / self.config.vae.hop_length
        return nearest_steps(end * P, VIDEO_FPS, frame_rate)[first * P :].numpy()


class LocDiTStage(Stage):
    """Denoises patches by flow matching, batching every request of a call that shares the solver."""

    name = LOCDIT

    def handle(self, messages: list[Envelope]) -> list[tuple[str, Envelope]]:
        groups: dict[tuple, list[Envelope]] = defaultdict(list)
        for message in messages:
            if message.kind != "patch":
                raise InputError(f"locdit: unknown message kind {message.kind!r}")
            groups[(int(message.meta["steps"]), *map(float, message.meta["guidance"]))].append(message)
        out = []
        C, dec = self.config.locdit.context_frames, decoder_context_frames(self.config.vae)
        for (steps, h_weight, context_weight), batch in groups.items():
            start = time.perf_counter()
            contexts = [
                _left_pad(m.tensors["recent"][:, m.tensors["recent"].shape[1] - C :], C) for m in batch
            ]
            z = self.backend.locdit(
                np.stack([m.tensors["h"] for m in batch]),
                np.stack(contexts),
                [int(m.meta["seed"]) for m in batch],
                [m.index for m in batch],
                steps,
                Guidance(h_weight, context_weight),
            )
            self.seconds[self.name] += time.perf_counter() - start
            for message, z_t in zip(batch, z, strict=True):
                recent = message.tensors["recent"]
                window = np.concatenate([recent[:, max(0, recent.shape[1] - dec) :], z_t], axis=-1)
                meta = {k: message.meta[k] for k in ("first_sample", "samples")}
                out.append(
                    (SPATIAL_LM, Envelope(message.stream_id, "latents", message.index, tensors={"z": z_t}))
                )
                out.append(
                    (
                        VAE_DECODER,
                        Envelope(message.stream_id, "latents", message.index, meta, {"window": window}),
                    )
                )
        return out


class VAEDecoderStage(Stage):
    """Latents -> FOA chunks, batching windows of equal length across streams."""

    name = VAE_DECODER

    def handle(self, messages: list[Envelope]) -> list[tuple[str, Envelope]]:
        for message in messages:
            if message.kind != "latents":
                raise InputError(f"vae_decoder: unknown message kind {message.kind!r}")
        start = time.perf_counter()
        audio = batched([m.tensors["window"] for m in messages], self.backend.vae_decoder, length_axis=-1)
        self.seconds[self.name] += time.perf_counter() - start
        out = []
        for message, chunk in zip(messages, audio, strict=True):
            samples = int(message.meta["samples"])
            meta = {"first_sample": int(message.meta["first_sample"])}
            chunk = np.ascontiguousarray(chunk[:, :samples], dtype=np.float32)
            out.append(
                (
                    out_topic(message.stream_id),
                    Envelope(message.stream_id, "chunk", message.index, meta, {"audio": chunk}),
                )
            )
        return out


def build_stages(backend: Backend, store: StateStore) -> dict[str, Stage]:
    """One object per stage, keyed by its topic."""
    return {
        VIDEO_ENCODER: VideoEncoderStage(backend, store),
        SPATIAL_LM: SpatialLMStage(backend, store),
        LOCDIT: LocDiTStage(backend, store),
        VAE_DECODER: VAEDecoderStage(backend, store),
    }


def batched(
    windows: Sequence[np.ndarray], compute: Callable[[np.ndarray], np.ndarray], length_axis: int
) -> list[np.ndarray]:
    """`compute` of every window, one batched call per window length along `length_axis` (windows
    of one call must share a shape); the outputs in the windows' order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, window in enumerate(windows):
        groups[window.shape[length_axis]].append(i)
    out: list[np.ndarray] = [np.empty(0)] * len(windows)
    for rows in groups.values():
        for i, result in zip(rows, compute(np.stack([windows[i] for i in rows])), strict=True):
            out[i] = result
    return out


def _forget(store: StateStore, streams: set[str]) -> None:
    """Drops what messages still in flight filed for closed streams (the store keeps the mark)."""
    for stream in streams:
        store.delete(stream)


def _left_pad(frames: np.ndarray, n: int) -> np.ndarray:
    """(D, m) -> (D, n): zeros before the start of the stream, as in training."""
    return np.pad(frames, ((0, 0), (n - frames.shape[1], 0)))


def _pack(array: np.ndarray) -> bytes:
    """An array as bytes for the state store: the envelope format, so no pickle."""
    return encode(Envelope("", "array", tensors={"a": np.ascontiguousarray(array)}))


def _unpack(blob: bytes) -> np.ndarray:
    return decode(blob).tensors["a"]
