"""Frozen FLAN-T5 text encoder of paper §3.3: caption -> states for the LM's cross-attention.

"For caption inputs containing spatial information, we first extract semantic embeddings using a
pre-trained FLAN-T5 encoder." The weights and tokenizer load only from a local folder or an `s3://`
prefix (never from a hub). The tiny preset uses a random T5 and a byte tokenizer instead, because no
tokenizer files can be downloaded here; its states carry no meaning beyond telling texts apart.

A `None` text is a missing modality: its row comes back with an all-False mask, and the LM puts its
learned null text embedding there. Texts longer than `max_length` tokens are truncated (keeping the
end-of-sequence token) and logged; validating lengths is the API layer's job.
"""

import logging
import tempfile
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn
from transformers import AutoTokenizer, T5Config, T5EncoderModel

from swansphere import storage
from swansphere.errors import InputError

logger = logging.getLogger(__name__)

MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
)
"""Files of a `save_pretrained` folder that are copied from an `s3://` prefix (the ones present)."""


class Tokenizer(Protocol):
    """What the encoder needs of a tokenizer; Hugging Face tokenizers have it already."""

    pad_token_id: int
    eos_token_id: int

    def encode(self, text: str) -> list[int]:
        """Token ids, ending with the end-of-sequence id."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as ids (byte + 3; 0 pad, 1 eos, 2 unused as in T5). For the tiny preset only."""

    pad_token_id = 0
    eos_token_id = 1
    offset = 3
    vocab_size = 256 + offset

    def encode(self, text: str) -> list[int]:
        return [byte + self.offset for byte in text.encode("utf-8")] + [self.eos_token_id]


class TextEncoder(nn.Module):
    """Frozen T5 encoder + tokenizer: texts -> (states (B, S, Dt), mask (B, S))."""

    def __init__(self, model: T5EncoderModel, tokenizer: Tokenizer, max_length: int = 128):
        super().__init__()
        if max_length < 2:
            raise ValueError(f"TextEncoder: max_length must be >= 2 (a token and eos), got {max_length}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length
        """Longest token sequence fed to T5; longer texts are truncated."""

    @classmethod
    def from_pretrained(cls, uri: str | Path, max_length: int = 128) -> "TextEncoder":
        """FLAN-T5 encoder and tokenizer from a local folder or an `s3://` prefix (safetensors only)."""
        if storage.is_s3(uri):
            with tempfile.TemporaryDirectory(prefix="swansphere-t5-") as folder:
                for name in MODEL_FILES:
                    if storage.exists(storage.join(uri, name)):
                        Path(folder, name).write_bytes(storage.read_bytes(storage.join(uri, name)))
                return cls._load_folder(Path(folder), str(uri), max_length)
        with storage.local_copy(uri) as folder:
            return cls._load_folder(folder, str(uri), max_length)

    @classmethod
    def _load_folder(cls, folder: Path, uri: str, max_length: int) -> "TextEncoder":
        try:
            model = T5EncoderModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(
                f"{uri}: not a T5 encoder folder with safetensors and a tokenizer ({reason})"
            ) from None
        return cls(model, tokenizer, max_length)

    @classmethod
    def tiny(cls, seed: int = 0, max_length: int = 64) -> "TextEncoder":
        """A random 2-layer T5 (d_model 32) with the byte tokenizer, same seed -> same weights."""
        config = T5Config(
            vocab_size=ByteTokenizer.vocab_size,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            dropout_rate=0.0,
            pad_token_id=ByteTokenizer.pad_token_id,
            eos_token_id=ByteTokenizer.eos_token_id,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = T5EncoderModel(config)
        return cls(model, ByteTokenizer(), max_length)

    @property
    def dim(self) -> int:
        """Dt, the width of the states."""
        return self.model.config.d_model

    def train(self, mode: bool = True) -> "TextEncoder":
        """The encoder is frozen: it stays in eval mode (no dropout) whatever its parent does."""
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def encode(self, texts: list[str | None]) -> tuple[Tensor, Tensor]:
        """States (B, S, Dt) and mask (B, S) (True = real token); a `None` row is all zeros / False."""
        device = next(self.model.parameters()).device
        present = [i for i, text in enumerate(texts) if text is not None]
        ids, mask = self._tokenize([texts[i] for i in present], device)  # (P, S)
        states = torch.zeros(len(texts), ids.shape[1], self.dim, device=device)
        full_mask = torch.zeros(len(texts), ids.shape[1], dtype=torch.bool, device=device)
        if present:
            encoded = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (P, S, Dt)
            states[present] = encoded * mask.unsqueeze(-1)
            full_mask[present] = mask
        return states, full_mask

    def _tokenize(self, texts: list[str], device: torch.device) -> tuple[Tensor, Tensor]:
        """Ids (P, S) padded to the longest text (S >= 1) and their mask; truncation keeps eos."""
        rows = [self.tokenizer.encode(text) for text in texts]
        truncated = sum(len(row) > self.max_length for row in rows)
        if truncated:
            logger.warning("%d of %d texts truncated to %d tokens", truncated, len(rows), self.max_length)
        eos = self.tokenizer.eos_token_id
        rows = [row if len(row) <= self.max_length else [*row[: self.max_length - 1], eos] for row in rows]
        length = max((len(row) for row in rows), default=1)
        ids = torch.full((len(rows), length), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        return ids.to(device), mask.to(device)
