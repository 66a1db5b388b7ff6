"""History encoder of paper §3.3: the previous patch of latents summarised into one vector.

"The history encoder summarizes the previously generated patch into a compact history
representation. At step t, this representation is added to the aligned video tokens and then fed
into the Spatial LM." Patch t therefore sees the latents of patch t-1; patch 0 sees a learned start
token. The paper's ablation "set the input to the history encoder to zero" is `zero_history=True`.

Why an MLP over the flattened patch rather than a conv + pooling: a patch is only 4 frames, so the
whole patch fits in one small matrix (4·D -> d_model, 0.8 M weights at paper scale), and flattening
keeps the order of the frames inside the patch, which pooling would throw away although the last
frames matter most for continuity with the next patch.
"""

import torch
from torch import Tensor, nn


class HistoryEncoder(nn.Module):
    """Latents of patch t-1 (B, D, patch_frames) -> history embedding of patch t (B, d_model)."""

    def __init__(self, latent_dim: int, d_model: int, patch_frames: int = 4, zero_history: bool = False):
        super().__init__()
        if latent_dim < 1 or d_model < 1 or patch_frames < 1:
            raise ValueError(
                f"HistoryEncoder: latent_dim, d_model and patch_frames must be >= 1, "
                f"got {latent_dim}, {d_model}, {patch_frames}"
            )
        self.latent_dim = latent_dim
        self.patch_frames = patch_frames
        self.zero_history = zero_history
        """Paper ablation: the encoder sees zeros, so the LM gets no acoustic history."""
        self.start = nn.Parameter(torch.randn(d_model) * 0.02)
        self.mlp = nn.Sequential(
            nn.Linear(latent_dim * patch_frames, d_model),
            nn.GELU(),
            nn.Linear(d_model, d_model),
        )

    def forward(self, prev_patch: Tensor | None, batch_size: int) -> Tensor:
        """History for one streaming step; `prev_patch` None at t = 0 gives the start token."""
        if prev_patch is None:
            return self.start.expand(batch_size, -1)  # (B, d_model)
        if prev_patch.shape != (batch_size, self.latent_dim, self.patch_frames):
            raise ValueError(
                f"HistoryEncoder: expected prev_patch {(batch_size, self.latent_dim, self.patch_frames)}, "
                f"got {tuple(prev_patch.shape)}"
            )
        return self._encode(prev_patch.unsqueeze(1)).squeeze(1)  # (B, d_model)

    def sequence(self, z: Tensor) -> Tensor:
        """Teacher forcing: z (B, D, T·patch_frames) -> (B, T, d_model); position t holds patch t-1."""
        B, D, L = z.shape
        if self.latent_dim != D or L % self.patch_frames or L == 0:
            raise ValueError(
                f"HistoryEncoder: expected z (B, {self.latent_dim}, k·{self.patch_frames}) with k >= 1, "
                f"got {tuple(z.shape)}"
            )
        patches = z.reshape(B, D, L // self.patch_frames, self.patch_frames).transpose(1, 2)  # (B, T, D, P)
        encoded = self._encode(patches[:, :-1])  # (B, T-1, d_model): patches 0..T-2
        start = self.start.expand(B, 1, -1)  # (B, 1, d_model)
        return torch.cat([start, encoded], dim=1)  # (B, T, d_model)

    def _encode(self, patches: Tensor) -> Tensor:
        """(B, T, D, P) -> (B, T, d_model)."""
        if self.zero_history:
            patches = torch.zeros_like(patches)
        return self.mlp(patches.flatten(2))
