"""Training data (paper App. B; DESIGN §3, §6): clips of AmbiX FOA, 4 fps equirect frames and captions.

Every source (SynthSphere folders, Sphere360, YT-Ambigen, WebDataset shards, pseudo-FOA curriculum
audio) becomes a `ClipDataset` of full-length `Clip`s, decoded lazily from local paths or `s3://`.
Training jobs draw seeded, aligned random crops from it with `random_batches`.

Alignment: at 44.1 kHz and 4 fps one video frame spans 11025 samples, so frame k starts at sample
11025·k; every crop starts on that grid and audio and frames stay aligned.
"""

import io
import json
import math
import posixpath
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from swansphere import storage
from swansphere.audio import read_audio, resample, write_audio
from swansphere.conventions import SAMPLE_RATE, VIDEO_FPS
from swansphere.errors import InputError
from swansphere.foa import fuma_to_ambix, pseudo_foa
from swansphere.models.vae import FOAVAE
from swansphere.trajectory import POINT_INTERVAL_S, Scene, parse_scene
from swansphere.video import model_frames, read_video, write_video

MANIFEST = "manifest.jsonl"
"""The SynthSphere manifest name (`synth/writer.py`), one JSON object per clip."""

SAMPLES_PER_FRAME = SAMPLE_RATE // VIDEO_FPS
"""11025: audio samples per 4 fps video frame; crops start on multiples of it."""

MIN_LATENT_STD = 1e-4
"""Floor of latent std: a channel the VAE never uses must not blow up (z - mean) / std."""


@dataclass
class Clip:
    """One training example, full length."""

    name: str
    foa: torch.Tensor
    """(4, N) float32 AmbiX (W, Y, Z, X; SN3D) at 44.1 kHz."""
    frames: torch.Tensor | None
    """(T, 3, H, W) float32 in [0, 1], 4 fps equirect at the dataset's frame size; None without video."""
    caption: str
    """"" when the source has none."""
    trajectory: dict | None
    """The trajectory JSON (DESIGN §5) when the layout has one."""

    def pixels(self) -> np.ndarray:
        """The frames as video files and the engine take them: (T, H, W, 3) uint8. Exact, since the
        loaders quantise frames to 1/255 steps."""
        if self.frames is None:
            raise InputError(f"{self.name}: clip has no video")
        return (self.frames * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@dataclass
class Batch:
    foa: torch.Tensor
    """(B, 4, N)"""
    frames: torch.Tensor | None
    """(B, T, 3, H, W), or None when any clip lacks video."""
    captions: list[str]
    names: list[str]


class ClipDataset(Dataset):
    """Map-style dataset of `Clip`s: `load(i)` decodes clip i on first access.

    With `cache`, decoded clips stay in memory (frames as uint8, a quarter of float32), so later epochs
    skip decoding. Loaders quantise frames to 1/255 steps, so cached and fresh clips are identical.
    """

    def __init__(self, names: Sequence[str], load: Callable[[int], Clip], cache: bool = True):
        self.names = list(names)
        self._load = load
        self._cache: dict[int, Clip] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Clip:
        if self._cache is None:
            return self._load(self._index(i))
        return _unpack(self._packed(i))

    def preload(self, workers: int) -> None:
        """Decode every clip into the cache now, `workers` at a time (the decoders release the GIL), so
        a job's first steps do not wait on files one clip at a time."""
        if self._cache is None:
            raise ValueError("preload needs a cached dataset (cache=True)")
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="decode") as pool:
            list(pool.map(self._packed, range(len(self))))

    def random_window(self, i: int, seconds: float, generator: torch.Generator) -> Clip:
        """`crop(self[i], seconds, generator)`, cut before unpacking: a batch copies its windows only."""
        if self._cache is None:
            return crop(self[i], seconds, generator)
        return _unpack(crop(self._packed(i), seconds, generator))

    def _index(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip index {i} out of range for {len(self)} clips")
        return i % len(self)

    def _packed(self, i: int) -> Clip:
        assert self._cache is not None
        i = self._index(i)
        if i not in self._cache:
            self._cache[i] = _pack(self._load(i))
        return self._cache[i]


def _pack(clip: Clip) -> Clip:
    frames = None if clip.frames is None else (clip.frames * 255.0).round().to(torch.uint8)
    return replace(clip, frames=frames)


def _unpack(clip: Clip) -> Clip:
    frames = None if clip.frames is None else clip.frames.float() / 255.0
    return replace(clip, foa=clip.foa.clone(), frames=frames)


# --- Decoding files ---------------------------------------------------------------------------


def load_foa(uri: str, fuma: bool = False, expected_rate: int | None = None) -> torch.Tensor:
    """A 4-channel file as (4, N) float32 AmbiX at 44.1 kHz (FuMa converted, other rates resampled)."""
    with storage.local_copy(uri) as path:
        audio, rate = read_audio(path)
    if audio.shape[0] != 4:
        raise InputError(f"{uri}: expected 4-channel FOA, got {audio.shape[0]} channel(s)")
    if expected_rate is not None and rate != expected_rate:
        raise InputError(f"{uri}: sample rate {rate} Hz does not match the manifest's {expected_rate} Hz")
    if fuma:
        audio = fuma_to_ambix(audio)
    return torch.from_numpy(resample(audio, rate, SAMPLE_RATE).astype(np.float32))


def load_frames(uri: str, frame_size: tuple[int, int]) -> torch.Tensor:
    """An equirect video as (T, 3, H, W) float32 at 4 fps, resized to frame_size = (H, W)."""
    with storage.local_copy(uri) as path:
        frames, _ = read_video(path, fps=VIDEO_FPS)
    return model_frames(frames, frame_size)


def _parent(uri: str) -> str:
    """The folder of a file URI (S3 keys split on `/`)."""
    return posixpath.dirname(uri) if storage.is_s3(uri) else str(Path(uri).parent)


def _read_trajectory(uri: str) -> dict:
    text = storage.read_bytes(uri).decode("utf-8", errors="replace")
    parse_scene(text, origin=uri)  # validates; InputError names the first problem
    return json.loads(text)


# --- SynthSphere ------------------------------------------------------------------------------


def synthsphere(manifest_uri: str, frame_size: tuple[int, int], cache: bool = True) -> ClipDataset:
    """SynthSphere clips listed in `manifest.jsonl` (rows of `synth/writer.py`).

    `manifest_uri` is the manifest itself or the folder holding it, local or `s3://`; the files a row
    names are relative to the manifest's folder.
    """
    if not manifest_uri.endswith(".jsonl"):
        manifest_uri = storage.join(manifest_uri, MANIFEST)
    rows = read_manifest(manifest_uri, required=("name", "audio"))
    folder = _parent(manifest_uri)

    def load(i: int) -> Clip:
        row = rows[i]
        trajectory = None
        if row.get("trajectory"):
            trajectory = _read_trajectory(storage.join(folder, row["trajectory"]))
        caption = row.get("caption") or (trajectory or {}).get("caption", "")
        return Clip(
            name=row["name"],
            foa=load_foa(storage.join(folder, row["audio"]), expected_rate=row.get("sample_rate")),
            frames=load_frames(storage.join(folder, row["video"]), frame_size) if row.get("video") else None,
            caption=caption,
            trajectory=trajectory,
        )

    return ClipDataset([row["name"] for row in rows], load, cache)


def read_manifest(uri: str, required: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON objects of a `.jsonl` file, each checked for `required` fields; InputError otherwise."""
    rows = []
    for number, line in enumerate(storage.read_bytes(uri).decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{uri}:{number}: malformed manifest line ({err.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{uri}:{number}: manifest line is not a JSON object")
        missing = [key for key in required if not isinstance(row.get(key), str) or not row[key]]
        if missing:
            raise InputError(f"{uri}:{number}: manifest line lacks {', '.join(missing)}")
        rows.append(row)
    if not rows:
        raise InputError(f"{uri}: manifest lists no clips")
    return rows


# --- Crops and batches ------------------------------------------------------------------------


def crop(clip: Clip, seconds: float, generator: torch.Generator) -> Clip:
    """A random `seconds` window starting at sample 11025·k, with video frames k .. k + ceil(4·seconds) - 1.

    Clips shorter than the window are zero-padded (audio) and repeat their last frame (video); the
    trajectory is resampled on the window's 0.25 s grid with times from 0.
    """
    if seconds <= 0:
        raise ValueError(f"crop length must be positive, got {seconds} s")
    n_samples, n_frames = round(seconds * SAMPLE_RATE), math.ceil(seconds * VIDEO_FPS - 1e-9)
    last_start = max(clip.foa.shape[-1] - n_samples, 0) // SAMPLES_PER_FRAME
    k = int(torch.randint(last_start + 1, (1,), generator=generator))
    start = k * SAMPLES_PER_FRAME
    foa = clip.foa[:, start : start + n_samples]
    foa = F.pad(foa, (0, n_samples - foa.shape[-1]))
    frames = None
    if clip.frames is not None:
        index = torch.arange(k, k + n_frames).clamp(max=clip.frames.shape[0] - 1)
        frames = clip.frames[index]
    trajectory = None if clip.trajectory is None else crop_trajectory(clip.trajectory, k / VIDEO_FPS, seconds)
    return Clip(name=clip.name, foa=foa, frames=frames, caption=clip.caption, trajectory=trajectory)


def crop_trajectory(trajectory: dict, start_s: float, seconds: float) -> dict:
    """The trajectory JSON of the window [start_s, start_s + seconds], points every 0.25 s from t = 0."""
    scene = Scene.model_validate(trajectory)
    times = np.arange(0.0, seconds + 1e-9, POINT_INTERVAL_S)
    document = scene.model_dump(by_alias=True, mode="json")
    document["duration"] = seconds
    for source, dumped in zip(scene.sources, document["sources"], strict=True):
        azimuth, elevation, distance = source.at(start_s + times)
        dumped["trajectory"] = [
            {"t": float(t), "azimuth": float(a), "elevation": float(e), "distance": float(d)}
            for t, a, e, d in zip(times, azimuth, elevation, distance, strict=True)
        ]
    return document


def collate(clips: list[Clip]) -> Batch:
    """Stack equal-length clips; frames only when every clip has them."""
    if not clips:
        raise ValueError("cannot collate an empty list of clips")
    lengths = {clip.foa.shape[-1] for clip in clips}
    if len(lengths) > 1:
        raise ValueError(f"clips differ in length ({sorted(lengths)} samples): crop them first")
    has_video = all(clip.frames is not None for clip in clips)
    return Batch(
        foa=torch.stack([clip.foa for clip in clips]),
        frames=torch.stack([clip.frames for clip in clips]) if has_video else None,
        captions=[clip.caption for clip in clips],
        names=[clip.name for clip in clips],
    )


def random_batches(
    dataset: ClipDataset,
    batch_size: int,
    seconds: float,
    generator: torch.Generator,
    indices: Sequence[int] | None = None,
) -> Iterator[Batch]:
    """Endless seeded batches of random crops: epochs over `indices` (or all clips) in shuffled order.

    For DDP pass this rank's shard, e.g. `range(rank, len(dataset), world_size)`, and a generator
    seeded per rank. Same dataset, seed and arguments, same batches.
    """
    pool = list(range(len(dataset))) if indices is None else list(indices)
    if not pool:
        raise ValueError("random_batches needs at least one clip index")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    queue: list[int] = []
    while True:
        chosen = []
        while len(chosen) < batch_size:
            if not queue:
                queue = [pool[j] for j in torch.randperm(len(pool), generator=generator).tolist()]
            chosen.append(queue.pop())
        yield collate([crop(dataset[i], seconds, generator) for i in chosen])


# --- Sphere360 and YT-Ambigen -----------------------------------------------------------------

SPHERE360_CLIP_S = 10.0
"""Sphere360 clips are 10 s cuts of YouTube videos (OmniAudio `Sphere360/README.md`)."""

YT_AMBIGEN_CLIP_S = 5.0
"""YT-Ambigen clips are 5 s cuts (ViSAGe `utils/prepare_dataset.py`)."""

AUDIO_EXTENSIONS = (".wav", ".flac", ".opus", ".ogg")
"""Audio containers libsndfile reads, tried in this order."""

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov")
"""Video containers tried in this order."""


def sphere360(
    root_uri: str,
    frame_size: tuple[int, int],
    clip_seconds: float = SPHERE360_CLIP_S,
    split: str = "train",
    fuma: bool = False,
    cache: bool = True,
) -> ClipDataset:
    """Sphere360 (OmniAudio, ICML 2025) laid out as the OmniAudio repository's `Sphere360/` folder.

    Assumed layout under `root_uri` (local or `s3://`):
    - `dataset/split/{split}.txt`: one clip id `VIDEOID_START` per line (START = start second in the
      YouTube video; each clip lasts 10 s), as shipped in the repository;
    - `video/ID.mp4|.webm|.mkv|.mov`: the clip's equirect video (the crawler's yt-dlp sections,
      `bv[height<=1440]` VP9 in webm);
    - `audio/ID.wav|.flac|.opus|.ogg`: its 4-channel FOA track (YouTube spatial audio is AmbiX,
      ACN/SN3D; Opus at 48 kHz), extracted from the webm, e.g. `ffmpeg -i ID.webm -vn -c:a copy
      audio/ID.opus`. Set `fuma=True` for FuMa files.
    Each clip is cut into `clip_seconds` windows (one 10 s window by default); audio is resampled to
    44.1 kHz, video taken at 4 fps. No captions: Sphere360 ships none.
    """
    ids = [line.strip() for line in _read_text(storage.join(root_uri, "dataset", "split", f"{split}.txt"))]
    return _paired_clips(
        root_uri, [i for i in ids if i], frame_size, clip_seconds, SPHERE360_CLIP_S, fuma, cache
    )


def yt_ambigen(
    root_uri: str,
    frame_size: tuple[int, int],
    clip_seconds: float = YT_AMBIGEN_CLIP_S,
    split: str = "train",
    split_uri: str | None = None,
    fuma: bool = False,
    cache: bool = True,
) -> ClipDataset:
    """YT-Ambigen (ViSAGe, ICLR 2025) as written by ViSAGe's `utils/prepare_dataset.py clip`.

    Assumed layout under `root_uri` (local or `s3://`):
    - `video/VIDEOID_SEC.mp4`: 5 s equirect clips re-encoded at 4 fps, 896x448;
    - `audio/VIDEOID_SEC.opus`: the matching 4-channel FOA (YouTube AmbiX, Opus 48 kHz);
    - the split CSV, `split_uri` or by default `{root_uri}/{split}.csv` (ViSAGe's
      `csv/yt_ambigen/{split}.csv` copied next to the data): a header (`file_path` or `id`) and one
      clip per row, `VIDEOID_SEC` with any extension (`.npy` there), which is dropped.
    Clips are 5 s; a longer `clip_seconds` leaves them short and `crop` pads them. Audio is
    resampled to 44.1 kHz, video taken at 4 fps. `fuma=True` converts FuMa files.
    """
    lines = _read_text(split_uri or storage.join(root_uri, f"{split}.csv"))
    ids = [posixpath.splitext(line.split(",")[0].strip())[0] for line in lines[1:]]
    return _paired_clips(
        root_uri, [i for i in ids if i], frame_size, clip_seconds, YT_AMBIGEN_CLIP_S, fuma, cache
    )


def _read_text(uri: str) -> list[str]:
    return storage.read_bytes(uri).decode("utf-8", errors="replace").splitlines()


def _paired_clips(
    root_uri: str,
    ids: list[str],
    frame_size: tuple[int, int],
    clip_seconds: float,
    native_seconds: float,
    fuma: bool,
    cache: bool,
) -> ClipDataset:
    """`video/ID.*` + `audio/ID.*` pairs, each cut into floor(native / clip_seconds) windows."""
    frames_per_clip = clip_seconds * VIDEO_FPS
    if clip_seconds <= 0 or abs(frames_per_clip - round(frames_per_clip)) > 1e-9:
        raise ValueError(f"clip_seconds must be a positive multiple of 0.25 s, got {clip_seconds}")
    if not ids:
        raise InputError(f"{root_uri}: the split lists no clips")
    windows = max(1, math.floor(native_seconds / clip_seconds + 1e-9))
    items = [(clip_id, j) for clip_id in ids for j in range(windows)]
    n_samples, n_frames = round(clip_seconds * SAMPLE_RATE), round(frames_per_clip)

    def load(i: int) -> Clip:
        clip_id, j = items[i]
        foa = load_foa(_find(root_uri, "audio", clip_id, AUDIO_EXTENSIONS), fuma=fuma)
        frames = load_frames(_find(root_uri, "video", clip_id, VIDEO_EXTENSIONS), frame_size)
        foa = foa[:, j * n_samples : (j + 1) * n_samples]
        if foa.shape[-1] == 0:
            raise InputError(f"{clip_id}: audio ends before window {j} ({j * clip_seconds:g} s)")
        # the frames starting inside this audio (a short file keeps its length; `crop` pads)
        count = min(n_frames, math.ceil(foa.shape[-1] / SAMPLES_PER_FRAME))
        index = torch.arange(j * n_frames, j * n_frames + count).clamp(max=frames.shape[0] - 1)
        frames = frames[index]
        return Clip(
            name=_window_name(clip_id, j, windows), foa=foa, frames=frames, caption="", trajectory=None
        )

    return ClipDataset([_window_name(clip_id, j, windows) for clip_id, j in items], load, cache)


def _window_name(clip_id: str, window: int, windows: int) -> str:
    return clip_id if windows == 1 else f"{clip_id}_w{window}"


def _find(root_uri: str, folder: str, stem: str, extensions: Sequence[str]) -> str:
    """The first `root/folder/stem.EXT` that exists; InputError naming what was tried otherwise."""
    for extension in extensions:
        uri = storage.join(root_uri, folder, stem + extension)
        if storage.exists(uri):
            return uri
    tried = "|".join(extension.lstrip(".") for extension in extensions)
    raise InputError(f"{storage.join(root_uri, folder, stem)}.{{{tried}}}: no such file")


# --- WebDataset shards ------------------------------------------------------------------------

SHARD_VIDEO_CRF = 0
"""x264 quality of shard videos: lossless in YUV, so frames come back within 2/255."""


def write_shards(dataset: ClipDataset, dest_uri: str, clips_per_shard: int) -> list[str]:
    """Write `dest_uri/shard-000000.tar`, ... (WebDataset: `KEY.wav`, `KEY.mp4`, `KEY.json` per clip).

    `KEY.wav` is the float32 AmbiX audio at 44.1 kHz, `KEY.mp4` the 4 fps frames at the dataset's
    frame size (absent without video), `KEY.json` holds name, caption and trajectory. Returns the
    shard URIs; `webdataset_shards` reads them back.
    """
    if clips_per_shard < 1:
        raise ValueError(f"clips_per_shard must be >= 1, got {clips_per_shard}")
    uris = []
    for first in range(0, len(dataset), clips_per_shard):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(first, min(first + clips_per_shard, len(dataset))):
                for member, data in _encode_members(dataset[i], key=f"{i:08d}").items():
                    info = tarfile.TarInfo(member)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        uri = storage.join(dest_uri, f"shard-{len(uris):06d}.tar")
        storage.write_bytes(uri, buffer.getvalue())
        uris.append(uri)
    return uris


def _encode_members(clip: Clip, key: str) -> dict[str, bytes]:
    """Tar member name -> bytes for one clip. Keys are the clip's position: names may hold dots."""
    document = {"name": clip.name, "caption": clip.caption, "trajectory": clip.trajectory}
    members = {f"{key}.json": json.dumps(document).encode()}
    with tempfile.TemporaryDirectory(prefix="swansphere-shard-") as folder:
        audio = Path(folder, "clip.wav")
        write_audio(audio, clip.foa.numpy(), SAMPLE_RATE)
        members[f"{key}.wav"] = audio.read_bytes()
        if clip.frames is not None:
            video = Path(folder, "clip.mp4")
            write_video(video, clip.pixels(), fps=VIDEO_FPS, crf=SHARD_VIDEO_CRF)
            members[f"{key}.mp4"] = video.read_bytes()
    return members


def webdataset_shards(
    shards: str | Sequence[str], frame_size: tuple[int, int], cache: bool = True
) -> ClipDataset:
    """Clips from WebDataset `.tar` shards, local or `s3://`, for random access.

    `shards` is a list of URIs or one URI with WebDataset brace ranges, e.g.
    `s3://data/synth/shard-{000000..000009}.tar`. Members are grouped by key (the name up to the
    first dot of the file name); each key needs `.wav`, may have `.mp4` and `.json` (name, caption,
    trajectory). S3 shards are downloaded once into a temporary folder and read from there.
    """
    uris = expand_braces(shards) if isinstance(shards, str) else list(shards)
    if not uris:
        raise InputError("no WebDataset shards given")
    reader = _ShardReader(uris, frame_size)
    return ClipDataset(reader.names, reader, cache)


class _ShardReader:
    """Index of shard members (path, offset, size) and the decoder of one sample; owns the spool
    folder of downloaded S3 shards, which lives as long as the dataset holding this reader."""

    def __init__(self, uris: list[str], frame_size: tuple[int, int]):
        self.frame_size = frame_size
        self.spool = tempfile.TemporaryDirectory(prefix="swansphere-shards-")
        self.samples: list[tuple[str, dict[str, tuple[Path, int, int]]]] = []
        for number, uri in enumerate(uris):
            path = Path(uri)
            if storage.is_s3(uri):
                path = Path(self.spool.name, f"{number:06d}.tar")
                path.write_bytes(storage.read_bytes(uri))
            self.samples.extend(_index_shard(path, uri))
        self.names = [self._document(i).get("name") or key for i, (key, _) in enumerate(self.samples)]

    def _document(self, i: int) -> dict:
        key, members = self.samples[i]
        if "json" not in members:
            return {}
        try:
            document = json.loads(_read_member(*members["json"]))
        except json.JSONDecodeError as err:
            raise InputError(f"{members['json'][0]}: sample {key}: malformed JSON ({err.msg})") from None
        if not isinstance(document, dict):
            raise InputError(f"{members['json'][0]}: sample {key}: JSON member is not an object")
        return document

    def __call__(self, i: int) -> Clip:
        key, members = self.samples[i]
        document = self._document(i)
        with tempfile.TemporaryDirectory(prefix="swansphere-sample-") as folder:
            audio = Path(folder, f"{key.replace('/', '_')}.wav")
            audio.write_bytes(_read_member(*members["wav"]))
            frames = None
            if "mp4" in members:
                video = audio.with_suffix(".mp4")
                video.write_bytes(_read_member(*members["mp4"]))
                frames = load_frames(str(video), self.frame_size)
            foa = load_foa(str(audio))
        return Clip(
            name=self.names[i],
            foa=foa,
            frames=frames,
            caption=document.get("caption") or "",
            trajectory=document.get("trajectory"),
        )


def expand_braces(pattern: str) -> list[str]:
    """WebDataset brace expansion: `a-{000..002}.tar` -> a-000.tar, a-001.tar, a-002.tar; `{x,y}` lists."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail, body = pattern[: match.start()], pattern[match.end() :], match.group(1)
    if ".." in body:
        low, _, high = body.partition("..")
        if not (low.isdigit() and high.isdigit()) or int(low) > int(high):
            raise InputError(f"{pattern}: bad brace range {{{body}}}")
        options = [str(n).zfill(len(low)) for n in range(int(low), int(high) + 1)]
    else:
        options = body.split(",")
    return [uri for option in options for uri in expand_braces(head + option + tail)]


def _index_shard(path: Path, uri: str) -> list[tuple[str, dict[str, tuple[Path, int, int]]]]:
    """(key, extension -> (tar path, data offset, size)) per sample, in member order."""
    if not path.is_file():
        raise InputError(f"{uri}: no such shard")
    grouped: dict[str, dict[str, tuple[Path, int, int]]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                folder, _, base = member.name.rpartition("/")
                stem, dot, extension = base.partition(".")
                if member.isfile() and dot:
                    key = f"{folder}/{stem}" if folder else stem
                    grouped.setdefault(key, {})[extension] = (path, member.offset_data, member.size)
    except tarfile.TarError as err:
        raise InputError(f"{uri}: not a readable tar shard ({err})") from None
    missing = [key for key, members in grouped.items() if "wav" not in members]
    if missing:
        raise InputError(f"{uri}: sample {missing[0]} has no .wav member")
    return list(grouped.items())


def _read_member(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read(size)


# --- Curriculum: pseudo-FOA from non-spatial audio (App. B.3) ----------------------------------


def pseudo_foa_dataset(source: str | Sequence[str], seed: int, cache: bool = True) -> ClipDataset:
    """Mono/stereo audio as pseudo-FOA clips (`foa.pseudo_foa`: W = L + R, L − R in one random
    directional channel), for pre-training LocDiT on general audio before spatial data.

    `source` is a list of audio URIs, a `.jsonl` manifest (rows with `audio`, optional `name` and
    `caption`, paths relative to the manifest), or a folder: its `manifest.jsonl` if it has one,
    else (local folders only) every .wav/.flac/.opus/.ogg file in it, sorted by name. Clip i draws
    its channel from `np.random.default_rng([seed, i])`, so it is the same every time it is read.
    """
    rows = _audio_rows(source)

    def load(i: int) -> Clip:
        row = rows[i]
        with storage.local_copy(row["audio"]) as path:
            audio, rate = read_audio(path)
        if audio.shape[0] not in (1, 2):
            raise InputError(f"{row['audio']}: expected mono or stereo audio, got {audio.shape[0]} channels")
        audio = resample(audio[0] if audio.shape[0] == 1 else audio, rate, SAMPLE_RATE)
        foa, _ = pseudo_foa(audio, np.random.default_rng([seed, i]))
        return Clip(
            name=row["name"],
            foa=torch.from_numpy(foa.astype(np.float32)),
            frames=None,
            caption=row.get("caption") or "",
            trajectory=None,
        )

    return ClipDataset([row["name"] for row in rows], load, cache)


def _audio_rows(source: str | Sequence[str]) -> list[dict[str, Any]]:
    """Rows {name, audio (absolute URI), caption?} for `pseudo_foa_dataset`."""
    if not isinstance(source, str):
        uris = list(source)
        return [
            {"name": posixpath.splitext(posixpath.basename(str(uri)))[0], "audio": str(uri)} for uri in uris
        ]
    manifest = source if source.endswith(".jsonl") else storage.join(source, MANIFEST)
    if storage.is_s3(source) or storage.exists(manifest):
        rows = read_manifest(manifest, required=("audio",))
        folder = _parent(manifest)
        for row in rows:
            row["name"] = row.get("name") or posixpath.splitext(posixpath.basename(row["audio"]))[0]
            row["audio"] = storage.join(folder, row["audio"])
        return rows
    folder = Path(source)
    if not folder.is_dir():
        raise InputError(f"{source}: no such folder or manifest")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise InputError(f"{source}: holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    return [{"name": path.stem, "audio": str(path)} for path in files]


# --- Latent normalisation statistics ----------------------------------------------------------


@torch.no_grad()
def latent_statistics(
    vae: FOAVAE,
    dataset: ClipDataset,
    seconds: float,
    max_clips: int,
    generator: torch.Generator,
    batch_size: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (D,) of VAE posterior means over random crops of up to `max_clips`
    clips: the `latent_mean` / `latent_std` buffers of `SwanSphere`, which LocDiT's targets are
    normalised with, (z - mean) / std.

    Moments are accumulated in float64 over every latent frame: mean = Σz / n,
    std = sqrt(Σz² / n − mean²).
    """
    if max_clips < 1:
        raise ValueError(f"max_clips must be >= 1, got {max_clips}")
    chosen = torch.randperm(len(dataset), generator=generator)[:max_clips].tolist()
    device = next(vae.parameters()).device
    was_training = vae.training
    vae.eval()
    total = torch.zeros(vae.config.latent_dim, dtype=torch.float64)
    squares = torch.zeros_like(total)
    count = 0
    for first in range(0, len(chosen), batch_size):
        batch = collate([crop(dataset[i], seconds, generator) for i in chosen[first : first + batch_size]])
        mean, _ = vae.encode_posterior(vae.pad_to_hop(batch.foa.to(device)))  # (B, D, L)
        z = mean.double().cpu().transpose(0, 1).reshape(vae.config.latent_dim, -1)  # (D, B·L)
        total += z.sum(dim=1)
        squares += (z * z).sum(dim=1)
        count += z.shape[1]
    vae.train(was_training)
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0.0).sqrt().clamp_min(MIN_LATENT_STD)
    return mean.float(), std.float()
