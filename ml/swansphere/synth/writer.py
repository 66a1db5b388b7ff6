"""Writing SynthSphere to a folder or `s3://` prefix (DESIGN §5 layout).

Per clip `NAME.mp4` (H.264 equirect), `NAME.wav` (4-channel float AmbiX) and `NAME.json`
(trajectory JSON with caption) side by side, then `manifest.jsonl` with one line per clip. Files are
encoded in a temporary folder and handed to `storage.write_bytes`, so both destinations get the
same bytes.
"""

import json
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from swansphere import storage
from swansphere.audio import write_audio
from swansphere.synth.config import SynthConfig
from swansphere.synth.render import Clip, generate_clip
from swansphere.video import write_video

MANIFEST = "manifest.jsonl"


def write_dataset(
    dest_uri: str, config: SynthConfig, clips: int, seed: int, workers: int = 1
) -> list[dict[str, Any]]:
    """Generate clips 0..clips-1 with `seed`, write them and the manifest; returns the manifest rows.
    Clip k depends on (config, k, seed) alone, so `workers` processes write the same bytes as one."""
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    jobs = [(dest_uri, config, index, seed) for index in range(clips)]
    if workers == 1:
        rows = [_write_clip(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(pool.map(_write_clip, *zip(*jobs, strict=True)))
    manifest = "".join(json.dumps(row) + "\n" for row in rows)
    storage.write_bytes(storage.join(dest_uri, MANIFEST), manifest.encode())
    return rows


def _write_clip(dest_uri: str, config: SynthConfig, index: int, seed: int) -> dict[str, Any]:
    clip = generate_clip(config, index, seed)
    for file_name, data in encode_clip(clip, config).items():
        storage.write_bytes(storage.join(dest_uri, file_name), data)
    return manifest_row(clip, config)


def encode_clip(clip: Clip, config: SynthConfig) -> dict[str, bytes]:
    """File name -> bytes of the clip's video, audio and trajectory JSON."""
    with tempfile.TemporaryDirectory(prefix="swansphere-synth-") as folder:
        video, audio = Path(folder, f"{clip.name}.mp4"), Path(folder, f"{clip.name}.wav")
        write_video(video, clip.frames, fps=config.fps)
        write_audio(audio, clip.foa, config.sample_rate)
        return {
            video.name: video.read_bytes(),
            audio.name: audio.read_bytes(),
            f"{clip.name}.json": clip.scene.to_json().encode(),
        }


def manifest_row(clip: Clip, config: SynthConfig) -> dict[str, Any]:
    """One manifest line: where the files are (relative to the manifest) and what the clip holds."""
    return {
        "name": clip.name,
        "video": f"{clip.name}.mp4",
        "audio": f"{clip.name}.wav",
        "trajectory": f"{clip.name}.json",
        "duration": config.seconds,
        "sample_rate": config.sample_rate,
        "fps": config.fps,
        "width": config.width,
        "height": config.height,
        "n_sources": len(clip.scene.sources),
        "classes": [source.sound_class for source in clip.scene.sources],
        "motions": list(clip.motions),
        "reverb": config.reverb,
        "rt60_s": config.rt60_s if config.reverb else None,
        "ambience_db": config.ambience_db,
        "caption": clip.scene.caption,
        "seed": clip.seed,
        "index": clip.index,
    }
