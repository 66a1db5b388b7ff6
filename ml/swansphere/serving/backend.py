"""Model compute of the four stages (DESIGN §2), one method per Triton model of the same name.

`TorchBackend` runs the modules in this process (embedded mode, and inside Triton's python backend,
whose models call exactly these methods); `triton_backend.TritonBackend` sends the same arrays to a
Triton server. Stage logic (`stages.py`) only ever talks to a `Backend`, so embedded and service mode
compute the same numbers.
"""

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from swansphere.errors import InputError
from swansphere.models.sampler import GraphedSampler, Guidance, batch_patch_noise, sample_patch
from swansphere.models.spatial_lm import KVCache
from swansphere.models.swansphere import SwanSphere, SwanSphereConfig
from swansphere.models.vae import DecoderState
from swansphere.video import pixels_to_float


class LMStateLostError(InputError):
    """The LM has no state for a stream at the asked patch (new worker, restart, eviction): the caller
    replays the stream from patch 0 (`stages.SpatialLMStage` keeps what it needs to)."""


class Backend(Protocol):
    config: SwanSphereConfig

    def video_encoder(self, pixels: np.ndarray) -> np.ndarray:
        """Model-resolution frames (B, T, 3, h, w) uint8 (`video.model_pixels`), B streams' windows of
        T frames -> video tokens (B, T, Dv). Block-causal: a longer prefix leaves earlier tokens
        unchanged. 8-bit all the way to the model: a quarter of the bytes of float32 per hop."""
        ...

    def spatial_lm(
        self,
        stream_id: str,
        first_patch: int,
        video: np.ndarray | None,
        previous: np.ndarray,
        text: str | None,
    ) -> np.ndarray:
        """h of patches first_patch .. first_patch + n - 1, stepping the stream's causal LM state.

        video: the patches' tokens (n, P, Dv), None for a text-only stream (null video); previous: the
        normalised latents the history encoder reads, (n, D, P) for patches first-1 .. first+n-2, one
        fewer when first_patch is 0 (the learned start token stands in); text: read when first_patch is
        0 (None = null text). Returns (n, C). LMStateLostError when the state is not at first_patch.
        """
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
    """Per-stream KV caches of the spatial LM, least recently used evicted beyond `capacity`.

    DESIGN §7: Triton's implicit state does not exist for the python backend, so the model keeps its
    caches itself; an evicted or unknown stream raises LMStateLostError and is replayed by the caller.
    """

    def __init__(self, model: SwanSphere, capacity: int = 256, autocast: torch.dtype | None = None):
        self.model = model
        self.capacity = capacity
        self.autocast = autocast
        """Lower precision for the LM's matrix products (bf16 on a GPU), None = the model's dtype."""
        self._caches: OrderedDict[str, KVCache] = OrderedDict()

    @torch.no_grad()
    def step(
        self,
        stream_id: str,
        first_patch: int,
        video: np.ndarray | None,
        previous: np.ndarray,
        text: str | None,
    ) -> np.ndarray:
        model, device = self.model, self.model.latent_mean.device
        n = len(previous) + (first_patch == 0)
        if video is not None and len(video) != n:
            raise InputError(f"spatial_lm: {len(video)} video patches but {n} history inputs")
        if first_patch == 0:
            states, mask = model.text_encoder.encode([text])
            cache = model.lm.new_cache(1, states.to(device), mask.to(device))
            history_inputs: list[torch.Tensor | None] = [None]
        else:
            cache = self._caches.get(stream_id)
            if cache is None or cache.position != first_patch:
                at = "no state" if cache is None else f"state at patch {cache.position}"
                raise LMStateLostError(
                    f"spatial_lm: stream {stream_id} has {at}, asked for patch {first_patch}"
                )
            history_inputs = []
        history_inputs += [torch.from_numpy(np.ascontiguousarray(z))[None].to(device) for z in previous]
        hs = []
        for i, prev in enumerate(history_inputs):
            tokens = (
                None if video is None else torch.from_numpy(np.ascontiguousarray(video[i]))[None].to(device)
            )
            with _autocast(device, self.autocast):
                hs.append(model.lm.step(tokens, model.history(prev, 1), cache))  # (1, C)
        self._caches[stream_id] = cache
        self._caches.move_to_end(stream_id)
        while len(self._caches) > self.capacity:
            self._caches.popitem(last=False)
        return torch.cat(hs).float().cpu().numpy()

    def drop(self, stream_id: str) -> None:
        self._caches.pop(stream_id, None)


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


class TorchBackend:
    """The modules of one checkpoint in this process.

    `autocast` (e.g. torch.bfloat16 on a GPU) runs the video encoder, the LM and LocDiT in that
    precision (the VAE decoder stays in the model's); `cuda_graphs` replays LocDiT's 20-step loop as
    one CUDA graph per batch size (`sampler.GraphedSampler`). Both off by default: the reference
    numbers every test compares against.
    """

    def __init__(
        self,
        model: SwanSphere,
        lm_capacity: int = 256,
        decoder_capacity: int = 256,
        autocast: torch.dtype | None = None,
        cuda_graphs: bool = False,
    ):
        self.model = model.eval()
        self.config = model.config
        self.device = model.latent_mean.device
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs needs the model on a CUDA device, it is on {self.device}")
        self.autocast = autocast
        self._capacities = (lm_capacity, decoder_capacity)
        self.graphed_sampler = GraphedSampler(self.model.locdit, autocast) if cuda_graphs else None
        self.reset()

    def reset(self) -> None:
        """Forget every stream (LM caches, decoder states) but keep the captured CUDA graphs: a started
        server's state before its first stream, without paying the capture again."""
        lm_capacity, decoder_capacity = self._capacities
        self.lm_states = LMStates(self.model, lm_capacity, self.autocast)
        self.decoder_states = DecoderStates(decoder_capacity)

    @torch.no_grad()
    def video_encoder(self, pixels: np.ndarray) -> np.ndarray:
        if pixels.dtype != np.uint8 or pixels.ndim != 5:
            raise InputError(
                f"video_encoder: pixels must be uint8 (B, T, 3, h, w), got {pixels.dtype} {pixels.shape}"
            )
        clips = pixels_to_float(torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device))
        with _autocast(self.device, self.autocast):
            tokens = self.model.svac.video_embeddings(clips)
        return tokens.float().cpu().numpy()  # (B, T, Dv)

    def spatial_lm(
        self,
        stream_id: str,
        first_patch: int,
        video: np.ndarray | None,
        previous: np.ndarray,
        text: str | None,
    ) -> np.ndarray:
        return self.lm_states.step(stream_id, first_patch, video, previous, text)

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
                z = sample_patch(self.model.locdit, h_t, context_t, noise, steps, guidance)
        return z.float().cpu().numpy()

    @torch.inference_mode()
    def vae_decoder(self, windows: np.ndarray) -> np.ndarray:
        """Decodes only the last patch of each window whose context has a state (`DecoderStates`),
        the whole window otherwise; files the state after each window for the stream's next one."""
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        B, _, L = windows.shape
        P, keep = self.config.patch_frames, self.config.patch_samples
        states = [
            self.decoder_states.take(DecoderStates.key(window[:, : L - P])) if L > P else None
            for window in windows
        ]
        hits = [i for i, state in enumerate(states) if state is not None]
        misses = [i for i, state in enumerate(states) if state is None]
        z = self.model.denormalize_latents(torch.from_numpy(windows).to(self.device))  # (B, D, L)
        audio = torch.empty(B, self.config.vae.audio_channels, keep, device=self.device)
        for rows, past in ((hits, [states[i] for i in hits]), (misses, None)):
            if not rows:
                continue
            batch_state = None if past is None else [torch.cat(parts) for parts in zip(*past, strict=True)]
            frames = z[rows] if past is None else z[rows, :, L - P :]
            decoded, after = self.model.vae.decode_stream(frames, batch_state)  # (b, 4, frames·hop)
            audio[rows] = decoded[..., -keep:].float()
            context = self.model.vae.decoder_context_frames
            for j, i in enumerate(rows):
                key = DecoderStates.key(windows[i][:, max(0, L - context) :])
                self.decoder_states.put(key, [part[j : j + 1].clone() for part in after])
        return audio.cpu().numpy()


def _autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to `dtype` on the device's type; a no-op context for None."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
