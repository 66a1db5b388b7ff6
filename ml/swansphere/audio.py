"""Audio files in and out: 4-channel AmbiX WAV/FLAC at 44.1 kHz, float inside."""

from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from swansphere.errors import InputError


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """(channels, N) float64 and the sample rate; InputError if missing or not audio."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such audio file")
    try:
        data, sample_rate = sf.read(str(path), dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise InputError(f"{path}: not a readable audio file ({err})") from None
    if data.shape[0] == 0:
        raise InputError(f"{path}: audio file holds no samples")
    return data.T, int(sample_rate)


def read_foa(path: str | Path) -> tuple[np.ndarray, int]:
    """An AmbiX FOA file as (4, N); InputError unless it has exactly 4 channels."""
    audio, sample_rate = read_audio(path)
    if audio.shape[0] != 4:
        raise InputError(f"{path}: expected 4-channel AmbiX FOA, got {audio.shape[0]} channel(s)")
    return audio, sample_rate


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write (channels, N) as float32 WAV (or FLAC/PCM-24 by extension); values are not clipped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subtype = "PCM_24" if path.suffix.lower() == ".flac" else "FLOAT"
    sf.write(str(path), np.asarray(audio, dtype=np.float32).T, sample_rate, subtype=subtype)
    if subtype == "FLOAT":
        _zero_peak_timestamp(path)


def _zero_peak_timestamp(path: Path) -> None:
    """libsndfile stamps a float WAV's PEAK chunk with the wall-clock time: zero it, so same audio
    gives same bytes. Walks the RIFF chunks before the audio data."""
    with path.open("r+b") as file:
        if file.read(4) != b"RIFF":
            return
        position = 12  # after "RIFF", size, "WAVE"
        while True:
            file.seek(position)
            header = file.read(8)
            if len(header) < 8 or header[:4] == b"data":
                return
            size = int.from_bytes(header[4:], "little")
            if header[:4] == b"PEAK":
                file.seek(position + 12)  # chunk id, chunk size, version, then the 4-byte timestamp
                file.write(bytes(4))
                return
            position += 8 + size + (size & 1)


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling along the last axis; a no-op at equal rates."""
    if source_rate == target_rate:
        return audio
    divisor = np.gcd(source_rate, target_rate)
    return resample_poly(audio, target_rate // divisor, source_rate // divisor, axis=-1)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Downmix (channels, N) to (N,) by averaging."""
    return np.asarray(audio, dtype=np.float64).mean(axis=0)
