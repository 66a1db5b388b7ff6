"""Model compute of the four stages (DESIGN §2), one method per Triton model of the same name.

`TorchBackend` runs the modules in this process (embedded mode, and inside Triton's python backend,
whose models call exactly these methods); `triton_backend.TritonBackend` sends the same arrays to a
Triton server. Stage logic (`stages.py`) only ever talks to a `Backend`, so embedded and service mode
compute the same numbers.
"""

from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from swansphere.errors import InputError
from swansphere.models.sampler import Guidance, batch_patch_noise, sample_patch
from swansphere.models.spatial_lm import KVCache
from swansphere.models.swansphere import SwanSphere, SwanSphereConfig


class LMStateLostError(InputError):
    """The LM has no state for a stream at the asked patch (new worker, restart, eviction): the caller
    replays the stream from patch 0 (`stages.SpatialLMStage` keeps what it needs to)."""


class Backend(Protocol):
    config: SwanSphereConfig

    def video_encoder(self, frames: np.ndarray) -> np.ndarray:
        """Model-resolution frames (T, 3, h, w) float32 in [0, 1], a stream's whole prefix ->
        video tokens (T, Dv). Block-causal: a longer prefix leaves earlier tokens unchanged."""
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

    def __init__(self, model: SwanSphere, capacity: int = 256):
        self.model = model
        self.capacity = capacity
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
            hs.append(model.lm.step(tokens, model.history(prev, 1), cache))  # (1, C)
        self._caches[stream_id] = cache
        self._caches.move_to_end(stream_id)
        while len(self._caches) > self.capacity:
            self._caches.popitem(last=False)
        return torch.cat(hs).float().cpu().numpy()

    def drop(self, stream_id: str) -> None:
        self._caches.pop(stream_id, None)


class TorchBackend:
    """The modules of one checkpoint in this process."""

    def __init__(self, model: SwanSphere, lm_capacity: int = 256):
        self.model = model.eval()
        self.config = model.config
        self.device = model.latent_mean.device
        self.lm_states = LMStates(self.model, lm_capacity)

    @torch.no_grad()
    def video_encoder(self, frames: np.ndarray) -> np.ndarray:
        clip = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))[None].to(self.device)
        return self.model.svac.video_embeddings(clip)[0].float().cpu().numpy()  # (T, Dv)

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
        z = sample_patch(
            self.model.locdit,
            torch.from_numpy(np.ascontiguousarray(h)).to(self.device),
            torch.from_numpy(np.ascontiguousarray(context)).to(self.device),
            noise,
            steps,
            guidance,
        )
        return z.float().cpu().numpy()

    @torch.no_grad()
    def vae_decoder(self, windows: np.ndarray) -> np.ndarray:
        z = self.model.denormalize_latents(torch.from_numpy(np.ascontiguousarray(windows)).to(self.device))
        audio = self.model.vae.decode(z)  # (B, 4, L·hop)
        return audio[..., -self.config.patch_samples :].float().cpu().numpy()
