"""Model compute of the four stages (DESIGN §2), one method per Triton model of the same name.

`TorchBackend` runs the modules in this process (embedded mode, and inside Triton's python backend,
whose models call exactly these methods); `triton_backend.TritonBackend` sends the same arrays to a
Triton server. Stage logic (`stages.py`) only ever talks to a `Backend`, so embedded and service mode
compute the same numbers.
"""

import hashlib
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from swansphere.errors import InputError
from swansphere.models.sampler import GraphedSampler, Guidance, batch_patch_noise, sample_patch
from swansphere.models.spatial_lm import GraphedStep, KVCache
from swansphere.models.swansphere import SwanSphere, SwanSphereConfig
from swansphere.models.vae import DecoderState, decoder_context_frames
from swansphere.models.video_encoder import VideoEncoderState
from swansphere.video import pixels_to_float


class LMStateLostError(InputError):
    """The LM has no state for a stream at the asked patch (new worker, restart, eviction): the caller
    replays the stream from patch 0 (`stages.SpatialLMStage` keeps what it needs to)."""


class VideoStateLostError(InputError):
    """The video encoder has no state for a stream at the frame a `FrameWindow.resume` window goes on
    from (new worker, restart, eviction): the caller sends the window again with the context frames
    its new ones depend on (`stages.VideoEncoderStage` reads them from the state store)."""


@dataclass(frozen=True)
class LMStep:
    """One stream's share of a spatial-LM call: patches first_patch .. first_patch + n - 1.

    video: the patches' tokens (n, P, Dv), None for a text-only stream (null video); previous: the
    normalised latents the history encoder reads, (n, D, P) for patches first-1 .. first+n-2, one
    fewer when first_patch is 0 (the learned start token stands in); text: read when first_patch is
    0 (None = null text). n > 1 only when a stream is replayed from patch 0.
    """

    stream_id: str
    first_patch: int
    video: np.ndarray | None
    previous: np.ndarray
    text: str | None = None

    @property
    def patches(self) -> int:
        return len(self.previous) + (self.first_patch == 0)


@dataclass(frozen=True)
class FrameWindow:
    """One stream's window of a video-encoder call: its frames first .. first + T − 1, of which the
    first `context` were encoded by an earlier call and are there for what the new ones attend to.

    `resume`: the window holds only new frames (no context) and goes on from the encoder's state for
    the stream at `first`; where the encoder has none, its row is a `VideoStateLostError`. A resumed
    call sends each frame once; the context a fallback sends grows with the encoder's receptive field
    (84 frames of 224 × 448 at the paper preset, 25 MB of pixels for every call of a stream).
    """

    stream_id: str
    first: int
    context: int = 0
    resume: bool = False

    @staticmethod
    def alone(n: int) -> "list[FrameWindow]":
        """n windows that each start a stream of their own, of which no state is kept."""
        return [FrameWindow("", 0)] * n


class Backend(Protocol):
    config: SwanSphereConfig

    def video_encoder(
        self, pixels: np.ndarray, windows: Sequence[FrameWindow] | None = None
    ) -> list[np.ndarray | VideoStateLostError]:
        """Model-resolution frames (B, T, 3, h, w) uint8 (`video.model_pixels`), B streams' windows of
        T frames, each with the same `context` -> per window, video tokens of the frames after it
        (T − context, Dv), or why a `resume` window could not go on. Block-causal: a longer prefix
        leaves earlier tokens unchanged. None: every window is the start of a stream of its own (no
        context, no state kept). With windows, the encoder keeps each stream's state after its window
        (`VideoEncoderStates`): a stream's next window then costs only its new frames; a window with
        context but without that state is encoded whole. 8-bit all the way to the model: a quarter of
        the bytes of float32 per hop."""
        ...

    def spatial_lm(self, steps: Sequence[LMStep]) -> list[np.ndarray | LMStateLostError]:
        """h of each step's patches (n, C), stepping its stream's causal LM state; the streams step
        together, one batched LM call per patch. LMStateLostError (returned, not raised) for a stream
        whose state is not at its first_patch: only that stream replays. Bad input raises InputError
        before any stream's state moves."""
        ...

    def end_stream(self, stream_id: str) -> None:
        """Free the stream's LM state."""
        ...

    def locdit(
        self,
        h: np.ndarray,
        context: np.ndarray,
        seeds: Sequence[int],
        patches: Sequence[int],
        steps: int,
        guidance: Guidance,
    ) -> np.ndarray:
        """Flow-matching sampling of a batch of patches (any mix of streams): h (B, C), boundary
        context (B, D, context_frames) normalised, noise from (seed, patch) -> z (B, D, P) normalised."""
        ...

    def vae_decoder(self, windows: np.ndarray) -> np.ndarray:
        """Normalised latents (B, D, L), each the last patch after its decoder context ->
        FOA (B, 4, P·hop) of that last patch."""
        ...


class LMStates:
    """The spatial LM's streams: one `KVCache` whose rows are streams, least recently used evicted
    beyond `capacity` streams.

    DESIGN §7: Triton's implicit state does not exist for the python backend, so the model keeps its
    caches itself; an evicted or unknown stream gets LMStateLostError and is replayed by the caller.
    All streams live in one cache so that a call steps every stream it names in one batched LM step
    per patch, whatever patch each is at (`SpatialLM.step` with `rows`). The cache grows by doubling
    up to `capacity` rows; an ended or evicted stream's row goes to the next new stream. `cuda_graphs`
    replays the step as CUDA graphs (`spatial_lm.GraphedStep`) instead of running it eagerly.
    """

    def __init__(
        self,
        model: SwanSphere,
        capacity: int = 256,
        autocast: torch.dtype | None = None,
        cuda_graphs: bool = False,
    ):
        if capacity < 1:
            raise ValueError(f"LMStates: capacity must be >= 1, got {capacity}")
        self.model = model
        self.capacity = capacity
        self.autocast = autocast
        """Lower precision for the LM's matrix products (bf16 on a GPU), None = the model's dtype."""
        self.lm = model.lm if autocast is None else model.lm.autocast_copy(autocast)
        """The LM that steps the streams: with autocast, a copy whose weights are cast once."""
        self.graphed = GraphedStep(self.lm, autocast) if cuda_graphs else None
        self._rows: OrderedDict[str, int] = OrderedDict()
        """Stream -> its row of the cache, least recently used first."""
        self._positions: dict[str, int] = {}
        """Stream -> its next patch (the cache's `positions`, kept here too: reading them back from a
        GPU would wait for its queue)."""
        self._free: list[int] = []
        self._cache = self.lm.new_cache(0)

    @torch.no_grad()
    def step(self, steps: Sequence[LMStep]) -> list[np.ndarray | LMStateLostError]:
        self._check(steps)
        results: list[np.ndarray | LMStateLostError] = [self._lost(step) for step in steps]
        live = [i for i, result in enumerate(results) if result is None]
        if not live:
            return results
        self._start([steps[i] for i in live if steps[i].first_patch == 0], {step.stream_id for step in steps})
        outputs, owners = [], []  # h of each batched patch, and the step it belongs to, row by row
        try:
            for k in range(max(steps[i].patches for i in live)):
                batch = [i for i in live if k < steps[i].patches]
                outputs.append(self._step_patch([steps[i] for i in batch], k))
                owners += batch
            h = torch.cat(outputs).float().cpu().numpy()  # one copy off the device for the whole call
        except BaseException:
            for i in live:  # half-stepped rows: the streams replay rather than go on from a wrong state
                self.drop(steps[i].stream_id)
            raise
        for i in live:
            self._rows.move_to_end(steps[i].stream_id)
            self._positions[steps[i].stream_id] = steps[i].first_patch + steps[i].patches
            results[i] = h[[row for row, owner in enumerate(owners) if owner == i]]
        return results

    def clear(self) -> None:
        """Forget every stream but keep the cache, so the CUDA graphs that address it stay valid: a
        started server's state before its first stream (a new stream's row is overwritten whole)."""
        self._free = sorted([*self._free, *self._rows.values()])
        self._rows.clear()
        self._positions.clear()

    def drop(self, stream_id: str) -> None:
        row = self._rows.pop(stream_id, None)
        self._positions.pop(stream_id, None)
        if row is not None:
            self._free.append(row)

    def _check(self, steps: Sequence[LMStep]) -> None:
        """Bad input fails the whole call before any state moves (the stage worker then finds the bad
        stream by handling its messages one by one)."""
        names = [step.stream_id for step in steps]
        if len(set(names)) != len(names):
            raise InputError("spatial_lm: a stream is named twice in one call")
        if len(steps) > self.capacity:
            raise InputError(f"spatial_lm: {len(steps)} streams in one call, at most {self.capacity}")
        P, Dv = self.model.config.patch_frames, self.model.config.lm.video_dim
        latent = (self.model.config.vae.latent_dim, P)
        for step in steps:
            if step.first_patch < 0:
                raise InputError(f"spatial_lm: first patch must be >= 0, got {step.first_patch}")
            if step.previous.ndim != 3 or step.previous.shape[1:] != latent:
                raise InputError(
                    f"spatial_lm: previous latents must be (n, {latent[0]}, {P}), got {step.previous.shape}"
                )
            if step.patches < 1:
                raise InputError(f"spatial_lm: stream {step.stream_id} asks for no patch")
            if step.video is not None and step.video.shape != (step.patches, P, Dv):
                raise InputError(
                    f"spatial_lm: video must be ({step.patches}, {P}, {Dv}) for stream {step.stream_id}'s "
                    f"{step.patches} patches, got {step.video.shape}"
                )

    def _lost(self, step: LMStep) -> LMStateLostError | None:
        if step.first_patch == 0:
            return None
        row = self._rows.get(step.stream_id)
        if row is None:
            return LMStateLostError(
                f"spatial_lm: stream {step.stream_id} has no state, asked for patch {step.first_patch}"
            )
        position = self._positions[step.stream_id]
        if position != step.first_patch:
            return LMStateLostError(
                f"spatial_lm: stream {step.stream_id} has state at patch {position}, "
                f"asked for patch {step.first_patch}"
            )
        return None

    def _start(self, steps: list[LMStep], keep: set[str]) -> None:
        """Rows at patch 0 for new (or restarted) streams, their texts encoded in one call; the
        streams in `keep` (this call's) are not evicted for them."""
        if not steps:
            return
        for step in steps:
            self.drop(step.stream_id)
        rows = self._allocate(len(steps), keep)
        device = self.model.latent_mean.device
        states, mask = self.model.text_encoder.encode([step.text for step in steps])
        fresh = self.lm.new_cache(len(steps), states.to(device), mask.to(device))
        slots = max(fresh.text_mask.shape[1], self._cache.text_mask.shape[1])
        for cache in (fresh, self._cache):  # the longest text yet sets the text slots of every row
            cache.pad_text(slots)
        self._cache.write(torch.tensor(rows, device=device), fresh)
        self._rows.update((step.stream_id, row) for step, row in zip(steps, rows, strict=True))

    def _allocate(self, n: int, keep: set[str]) -> list[int]:
        """n free rows: freed ones first, then new ones (the cache doubles, up to `capacity`), then the
        least recently used streams' not in `keep` (they replay if they come back)."""
        missing = n - len(self._free)
        grow = min(max(missing, self._cache.rows), self.capacity - self._cache.rows)
        if missing > 0 and grow > 0:
            extra = self.lm.new_cache(grow)
            extra.pad_text(self._cache.text_mask.shape[1])
            self._free += range(self._cache.rows, self._cache.rows + grow)
            self._cache = KVCache.cat([self._cache, extra])
        evict = max(0, n - len(self._free))
        for stream in [stream for stream in self._rows if stream not in keep][:evict]:
            self.drop(stream)
        rows, self._free = self._free[:n], self._free[n:]
        return rows

    def _step_patch(self, steps: list[LMStep], k: int) -> torch.Tensor:
        """The k-th patch of each step's stream, in one batched LM step -> h (B, C)."""
        model, device = self.model, self.model.latent_mean.device
        B = len(steps)
        # History (paper §3.3): the start token at a stream's patch 0, else its previous patch encoded.
        offsets = [k - (step.first_patch == 0) for step in steps]
        history = model.history.start.expand(B, -1).clone()
        encoded = [j for j, offset in enumerate(offsets) if offset >= 0]
        if encoded:
            previous = np.stack([steps[j].previous[offsets[j]] for j in encoded]).astype(np.float32)
            history[encoded] = model.history(torch.from_numpy(previous).to(device), len(encoded))
        has_video = [step.video is not None for step in steps]
        video_present = None if all(has_video) else torch.tensor(has_video, device=device)
        P, Dv = model.config.patch_frames, model.config.lm.video_dim
        tokens = np.zeros((B, P, Dv), np.float32)
        for j, step in enumerate(steps):
            if step.video is not None:
                tokens[j] = step.video[k]
        rows = [self._rows[step.stream_id] for step in steps]
        if self.graphed is not None:
            present = torch.tensor(has_video, device=device)
            h = self.graphed(
                torch.from_numpy(tokens).to(device),
                history,
                self._cache,
                present,
                torch.tensor(rows, device=device),
            )
            return h.clone()  # the graph's output is overwritten by the next patch's replay
        # Every row in order (one stream, or all the streams at once) reads the cache without a copy.
        index = None if rows == list(range(self._cache.rows)) else torch.tensor(rows, device=device)
        with _autocast(device, self.autocast):
            return self.lm.step(
                torch.from_numpy(tokens).to(device), history, self._cache, video_present, index
            )


class DecoderStates:
    """Decoder states (`vae.Decoder.stream`) filed under the latents they follow, least recently used
    evicted beyond `capacity`.

    A decoder message is stateless by design (it carries its latent window, so any worker can decode
    any patch), but decoding the window's `decoder_context_frames` of context again with every patch
    is most of the decoder's work. The state after a window depends on nothing but the window's last
    `decoder_context_frames` frames (the decoder's reach, `vae.decoder_context_frames`), and fewer
    frames only occur at the start of a stream, where a window starts from zeros. So the state is
    filed under those frames' bytes, and the next window of the same stream, whose context they are,
    finds it: it then decodes only its new patch. A window whose context has no state (another
    worker decoded the previous patch, a restart, a redelivery after eviction) is decoded whole, as
    before; both give the same audio.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._states: OrderedDict[bytes, DecoderState] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(frames: np.ndarray) -> bytes:
        """Digest of normalised latents (D, n), their shape included."""
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        digest = hashlib.blake2b(repr(frames.shape).encode(), digest_size=16)
        digest.update(frames.tobytes())
        return digest.digest()

    def take(self, key: bytes) -> DecoderState | None:
        """The state filed under `key`, removed: the next one replaces it, so a stream holds one entry
        (a redelivered window then decodes whole, which gives the same audio)."""
        with self._lock:
            return self._states.pop(key, None)

    def put(self, key: bytes, state: DecoderState) -> None:
        with self._lock:
            self._states[key] = state
            self._states.move_to_end(key)
            while len(self._states) > self.capacity:
                self._states.popitem(last=False)


class VideoEncoderStates:
    """Each stream's video-encoder state (`VideoEncoder.stream`), filed under (stream, the frame it
    continues at), least recently used evicted beyond `max_bytes` of keys and values.

    The stage sends a stream's new frames alone (`FrameWindow.resume`); where the stream has no state
    here (another worker, a restart, an eviction) it sends them again after the frames they depend on
    (`FrameWindow.context`), encoded whole to the same tokens. A stream's frames never change once
    filed, so its id and a frame index name one state. Taking a state removes it: a stream holds one
    entry. Bounded by bytes, not streams: a state is 12 layers' keys and values of 7 frames of 392
    tokens at the paper preset, 101 MB in bf16 (202 MB in float32), and a few KB at the tiny one.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._states: OrderedDict[tuple[str, int], VideoEncoderState] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, stream_id: str, frame: int) -> VideoEncoderState | None:
        with self._lock:
            state = self._states.pop((stream_id, frame), None)
            self._bytes -= 0 if state is None else state.nbytes
            return state

    def put(self, stream_id: str, frame: int, state: VideoEncoderState) -> None:
        with self._lock:
            replaced = self._states.pop((stream_id, frame), None)
            self._bytes += state.nbytes - (0 if replaced is None else replaced.nbytes)
            self._states[stream_id, frame] = state
            while self._bytes > self.max_bytes:
                _, evicted = self._states.popitem(last=False)
                self._bytes -= evicted.nbytes


class TorchBackend:
    """The modules of one checkpoint in this process.

    `autocast` (e.g. torch.bfloat16 on a GPU) runs the video encoder, the LM and LocDiT in that
    precision (the VAE decoder stays in the model's); `cuda_graphs` replays LocDiT's 20-step loop as
    one CUDA graph per batch size (`sampler.GraphedSampler`) and the LM's step likewise
    (`spatial_lm.GraphedStep`). Both off by default: the reference numbers every test compares against.
    `video_state_bytes` bounds the video encoder's stream states (`VideoEncoderStates`): 8 GiB keeps
    about 80 paper-preset streams in bf16.
    """

    def __init__(
        self,
        model: SwanSphere,
        lm_capacity: int = 256,
        decoder_capacity: int = 256,
        autocast: torch.dtype | None = None,
        cuda_graphs: bool = False,
        video_state_bytes: int = 8 << 30,
    ):
        self.model = model.eval()
        self.config = model.config
        self.device = model.latent_mean.device
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs needs the model on a CUDA device, it is on {self.device}")
        self.autocast = autocast
        self._decoder_capacity = decoder_capacity
        self.locdit_model = model.locdit if autocast is None else model.locdit.autocast_copy(autocast)
        """LocDiT with its weights in the autocast dtype once, not at each of the 20 steps of a patch."""
        self.graphed_sampler = GraphedSampler(self.locdit_model, autocast) if cuda_graphs else None
        self.lm_states = LMStates(self.model, lm_capacity, autocast, cuda_graphs)
        self.decoder_states = DecoderStates(decoder_capacity)
        self.video_states = VideoEncoderStates(video_state_bytes)
        self.decoder = model.vae.folded_decoder()
        """The VAE decoder with its weight norm folded in, taken once here (later weight changes to
        `model` do not reach it)."""

    def reset(self) -> None:
        """Forget every stream (LM rows, video-encoder and decoder states) but keep the LM's cache and
        the captured CUDA graphs: a started server's state before its first stream, without paying the
        capture again."""
        self.lm_states.clear()
        self.decoder_states = DecoderStates(self._decoder_capacity)
        self.video_states = VideoEncoderStates(self.video_states.max_bytes)

    @torch.no_grad()
    def video_encoder(
        self, pixels: np.ndarray, windows: Sequence[FrameWindow] | None = None
    ) -> list[np.ndarray | VideoStateLostError]:
        if pixels.dtype != np.uint8 or pixels.ndim != 5:
            raise InputError(
                f"video_encoder: pixels must be uint8 (B, T, 3, h, w), got {pixels.dtype} {pixels.shape}"
            )
        B, T = pixels.shape[:2]
        windows = windows or FrameWindow.alone(B)
        context = windows[0].context
        if len(windows) != B or any(w.context != context for w in windows) or not 0 <= context < T:
            raise InputError(
                f"video_encoder: {B} windows of {T} frames need {B} FrameWindows with one context < {T}"
            )
        if any(w.resume and (w.context or not w.stream_id) for w in windows):
            raise InputError("video_encoder: a resumed window names its stream and has no context")
        states = [
            self.video_states.take(w.stream_id, w.first + context) if w.stream_id else None for w in windows
        ]
        results: list[np.ndarray | VideoStateLostError] = [
            VideoStateLostError(f"video_encoder: stream {w.stream_id} has no state at frame {w.first}")
            for w in windows
        ]
        # Rows that go on from their state encode only their new frames, batched by the state's steps;
        # the others encode their whole window (context included) from the stream's start.
        groups: dict[int, list[int]] = defaultdict(list)
        for i, (window, state) in enumerate(zip(windows, states, strict=True)):
            if state is not None or not window.resume:
                groups[-1 if state is None else state.steps].append(i)
        if not groups:
            return results
        clips = pixels_to_float(torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device))
        tokens = torch.empty(B, T - context, self.config.svac.proj_dim, device=self.device)
        for steps, rows in groups.items():
            start = context if steps >= 0 else 0
            past = None if steps < 0 else VideoEncoderState.cat([states[i] for i in rows])
            with _autocast(self.device, self.autocast):
                out, after = self.model.svac.video_embeddings_stream(clips[rows, start:], past)
            tokens[rows] = out[:, out.shape[1] - (T - context) :].float()
            for j, i in enumerate(rows):
                if windows[i].stream_id:
                    self.video_states.put(windows[i].stream_id, windows[i].first + T, after.row(j))
        encoded = tokens.cpu().numpy()  # (B, T - context, Dv)
        for rows in groups.values():
            for i in rows:
                results[i] = encoded[i]
        return results

    def spatial_lm(self, steps: Sequence[LMStep]) -> list[np.ndarray | LMStateLostError]:
        return self.lm_states.step(steps)

    def end_stream(self, stream_id: str) -> None:
        self.lm_states.drop(stream_id)

    @torch.no_grad()
    def locdit(
        self,
        h: np.ndarray,
        context: np.ndarray,
        seeds: Sequence[int],
        patches: Sequence[int],
        steps: int,
        guidance: Guidance,
    ) -> np.ndarray:
        shape = (self.config.vae.latent_dim, self.config.patch_frames)
        noise = batch_patch_noise([int(s) for s in seeds], [int(p) for p in patches], shape).to(self.device)
        h_t = torch.from_numpy(np.ascontiguousarray(h)).to(self.device)
        context_t = torch.from_numpy(np.ascontiguousarray(context)).to(self.device)
        if self.graphed_sampler is not None:
            z = self.graphed_sampler(h_t, context_t, noise, steps, guidance)
        else:
            with _autocast(self.device, self.autocast):
                z = sample_patch(self.locdit_model, h_t, context_t, noise, steps, guidance)
        return z.float().cpu().numpy()

    @torch.inference_mode()
    def vae_decoder(self, windows: np.ndarray) -> np.ndarray:
        """Decodes only the last patch of each window whose context has a state (`DecoderStates`),
        the whole window otherwise; files the state after each window for the stream's next one.

        A batch may hold a stream's consecutive patches (a burst: LocDiT ran ahead of the decoder).
        A window whose context another window of the batch ends with waits for that window's state
        and is decoded in a later round of the same call, from it; decoded whole at once it cost
        about 5 times as much (bursts of 4 tiny streams: 27 against 230 ms a decoder call)."""
        windows = decoder_windows(np.ascontiguousarray(windows, dtype=np.float32), self.config)
        B, _, L = windows.shape
        P, context = self.config.patch_frames, self.model.vae.decoder_context_frames
        goes_on_from = [DecoderStates.key(window[:, : L - P]) if L > P else None for window in windows]
        leaves = [DecoderStates.key(window[:, max(0, L - context) :]) for window in windows]
        z = self.model.denormalize_latents(torch.from_numpy(windows).to(self.device))  # (B, D, L)
        audio = torch.empty(B, self.config.vae.audio_channels, self.config.patch_samples, device=self.device)
        pending = list(range(B))
        while pending:
            left = {leaves[i]: i for i in pending}
            ready = [i for i in pending if left.get(goes_on_from[i], i) == i] or pending
            self._decode_rows(z, ready, goes_on_from, leaves, audio)
            pending = [i for i in pending if i not in ready]
        return audio.cpu().numpy()

    def _decode_rows(
        self,
        z: torch.Tensor,
        rows: list[int],
        goes_on_from: list[bytes | None],
        leaves: list[bytes],
        audio: torch.Tensor,
    ) -> None:
        """Rows of `z` (B, D, L): those with a state decode their last patch from it, batched, the
        others their whole window; each row's audio into `audio`, its state filed under `leaves`."""
        P, keep = self.config.patch_frames, self.config.patch_samples
        states = {i: self.decoder_states.take(goes_on_from[i]) if goes_on_from[i] else None for i in rows}
        hits = [i for i in rows if states[i] is not None]
        misses = [i for i in rows if states[i] is None]
        for batch, past in ((hits, [states[i] for i in hits]), (misses, None)):
            if not batch:
                continue
            batch_state = None if past is None else [torch.cat(parts) for parts in zip(*past, strict=True)]
            frames = z[batch] if past is None else z[batch, :, z.shape[-1] - P :]
            decoded, after = self.decoder.stream(frames, batch_state)  # (b, 4, frames·hop)
            audio[batch] = decoded[..., -keep:].float()
            for j, i in enumerate(batch):
                self.decoder_states.put(leaves[i], [part[j : j + 1].clone() for part in after])


def decoder_windows(windows: np.ndarray, config: SwanSphereConfig) -> np.ndarray:
    """Latent windows (B, D, L) as the decoder takes them: InputError unless each ends with a
    patch's P frames. Context older than the decoder's receptive field is dropped: it cannot change
    the patch's audio, and a window is decoded whole when no state goes on from it, so a long one
    would only cost compute and memory."""
    D, P = config.vae.latent_dim, config.patch_frames
    if windows.ndim != 3 or windows.shape[1] != D or windows.shape[2] < P:
        raise InputError(
            f"vae_decoder: windows must be (B, {D}, L >= {P}) latents, got {tuple(windows.shape)}"
        )
    return np.ascontiguousarray(
        windows[..., max(0, windows.shape[2] - decoder_context_frames(config.vae) - P) :]
    )


def _autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to `dtype` on the device's type; a no-op context for None."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
