"""Checkpoints: one safetensors file holding the weights and the exact config they were built with.

Local path or s3:// URI (swansphere.storage). No pickle anywhere: safetensors stores tensors only,
and the config travels as JSON in the file's metadata. A config whose text encoder is pretrained
FLAN-T5 leaves those frozen weights out; they load from `config.text.pretrained`.
"""

import hashlib
import json
from pathlib import Path

import safetensors
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from swansphere import storage
from swansphere.errors import InputError
from swansphere.models.config_io import config_from_dict, config_to_dict
from swansphere.models.swansphere import SwanSphere, SwanSphereConfig

FORMAT = "swansphere-v1"
TEXT_ENCODER_PREFIX = "text_encoder."
SHIPPED_TINY = Path(__file__).parent / "checkpoints" / "swansphere-tiny.safetensors"
"""The trained tiny model that ships with the package (`make demo`); its model card lies beside it."""


def save_checkpoint(model: SwanSphere, uri: str | Path, extra: dict[str, str] | None = None) -> None:
    """Write the model's weights and config; `extra` adds string metadata (run id, step, ...)."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in _stored_tensors(model).items()}
    metadata = {"format": FORMAT, "config": json.dumps(config_to_dict(model.config)), **(extra or {})}
    storage.write_bytes(uri, save_safetensors(state, metadata=metadata))


def read_metadata(data: bytes, uri: str | Path) -> dict[str, str]:
    """The metadata of a safetensors blob; InputError if it is not a SwanSphere checkpoint."""
    try:
        header_length = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_length])
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{uri}: not a safetensors file") from None
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT:
        raise InputError(f"{uri}: not a SwanSphere checkpoint (format {metadata.get('format')!r})")
    return metadata


def load_checkpoint(
    uri: str | Path, device: str | torch.device = "cpu", sha256: str | None = None
) -> SwanSphere:
    """Build the model from the checkpoint's own config and load its weights (strictly); given
    `sha256`, refuse a file whose hash differs. The file is read once and dropped before the model is
    built, so loading holds about twice the checkpoint's size, not three times (a paper-size Triton
    model loads four of them at once)."""
    data = storage.read_bytes(uri)
    config, state = _parse(data, uri, sha256)
    del data
    return _build(config, state, uri).to(device).eval()


def checked_config(data: bytes, uri: str | Path) -> SwanSphereConfig:
    """The config of a checkpoint's bytes once its model has been built and has taken the weights,
    as `load_checkpoint` does: for a copy that must be sound before it is written (`swansphere
    export`), from the bytes the caller already holds."""
    config, state = _parse(data, uri, None)
    _build(config, state, uri)
    return config


def _parse(
    data: bytes, uri: str | Path, sha256: str | None
) -> tuple[SwanSphereConfig, dict[str, torch.Tensor]]:
    """The config and the tensors of a checkpoint's bytes; given `sha256`, refuse other bytes."""
    if sha256 is not None and (digest := hashlib.sha256(data).hexdigest()) != sha256:
        raise InputError(
            f"{uri}: checkpoint sha256 {digest} differs from the exported {sha256}; "
            "refusing to load (re-run `swansphere export`)"
        )
    metadata = read_metadata(data, uri)
    try:
        config = config_from_dict(SwanSphereConfig, json.loads(metadata["config"]))
        state = load_safetensors(data)
    except (KeyError, ValueError, TypeError, safetensors.SafetensorError) as err:
        raise InputError(f"{uri}: damaged checkpoint ({err})") from None
    return config, state


def _build(config: SwanSphereConfig, state: dict[str, torch.Tensor], uri: str | Path) -> SwanSphere:
    """The config's model with the checkpoint's tensors, every one present and of its shape."""
    model = SwanSphere(config)
    stored = _stored_tensors(model)
    expected = set(stored)
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise InputError(
            f"{uri}: checkpoint does not match its config "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    for name, tensor in stored.items():  # load_state_dict would list every mismatch over many lines
        if state[name].shape != tensor.shape:
            raise InputError(
                f"{uri}: checkpoint does not match its config (tensor {name} has shape "
                f"{list(state[name].shape)}, the config's model has {list(tensor.shape)})"
            )
    model.load_state_dict(state, strict=False)
    return model


def _stored_tensors(model: SwanSphere) -> dict[str, torch.Tensor]:
    """The state dict as stored: tied weights once (T5 ties its embeddings; safetensors refuses
    aliases), pretrained FLAN-T5 left out. `load_state_dict(strict=False)` restores the ties."""
    stored, seen = {}, set()
    for name, tensor in model.state_dict().items():
        if model.config.text.pretrained is not None and name.startswith(TEXT_ENCODER_PREFIX):
            continue
        if tensor.device.type != "meta" and tensor.numel() and tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        stored[name] = tensor
    return stored
