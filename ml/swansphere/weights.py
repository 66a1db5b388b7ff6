"""Reading other projects' pretrained weights (Stable Audio Open's VAE, AudioMAE, ...).

Local path or s3://, safetensors or a torch file loaded with `weights_only=True`, so no code in
the file runs. Our own checkpoints go through `checkpoint.py` instead.
"""

import pickle
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import Tensor

from swansphere.errors import InputError
from swansphere.storage import local_copy


def read_tensors(uri: str | Path, wrapper: str) -> dict[str, Tensor]:
    """The tensors of a weights file; a torch file's state dict may sit under the key `wrapper`
    (Lightning's "state_dict", AudioMAE's "model")."""
    with local_copy(uri) as path:
        try:
            if path.suffix == ".safetensors":
                return safetensors.torch.load_file(path, device="cpu")
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, pickle.UnpicklingError, safetensors.SafetensorError) as err:
            raise InputError(f"{uri}: not a readable checkpoint ({str(err).partition(chr(10))[0]})") from None
    state = state.get(wrapper, state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise InputError(f"{uri}: checkpoint is not a dictionary of tensors")
    return {key: value for key, value in state.items() if isinstance(value, Tensor)}
