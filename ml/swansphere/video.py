"""Equirectangular video files (PyAV): frames as (T, H, W, 3) uint8 RGB."""

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch
import torch.nn.functional as F

from swansphere.conventions import VIDEO_FPS
from swansphere.equirect import check_equirect_size
from swansphere.errors import InputError

MAX_FRAME_WIDTH = 7680
"""Widest equirect frame taken anywhere (8K): read from a raw pipe, drawn by SynthSphere, sent to the
gateway. A wider size would fail allocating its first frame."""


def write_video(path: str | Path, frames: np.ndarray, fps: int = VIDEO_FPS, crf: int = 12) -> None:
    """H.264 MP4, one encoder thread and no timestamps in the header, so same frames give same bytes."""
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"video frames must be (T, H, W, 3), got {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"
        stream.thread_count = 1
        stream.options = {"crf": str(crf), "preset": "medium", "x264-params": "threads=1"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def read_video(path: str | Path, fps: int = VIDEO_FPS) -> tuple[np.ndarray, float]:
    """Frames resampled to `fps` (nearest earlier frame) and the duration in seconds.

    InputError if the file is missing, not a video, or not equirectangular (W = 2·H).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such video file")
    try:
        decoded, times = _decode(path)
    except (av.error.FFmpegError, ValueError, IndexError) as err:
        raise InputError(f"{path}: not a readable video ({err})") from None
    if not decoded:
        raise InputError(f"{path}: video holds no frames")
    height, width = decoded[0].shape[:2]
    if width != 2 * height:
        raise InputError(f"{path}: not equirectangular: {width}x{height} (width must be 2 x height)")
    step = times[1] - times[0] if len(times) > 1 else 1.0 / fps
    duration = times[-1] + step
    wanted = np.arange(round(duration * fps)) / fps
    index = np.clip(np.searchsorted(times, wanted + 1e-6, side="right") - 1, 0, len(decoded) - 1)
    return np.stack([decoded[i] for i in index]), float(duration)


def read_raw_frames(stream: BinaryIO, width: int, height: int) -> Iterator[np.ndarray]:
    """Raw RGB24 frames (H, W, 3) from a pipe, each as soon as it has come whole: a live source, as
    `ffmpeg -i CAMERA -f rawvideo -pix_fmt rgb24 -r 4 -s WxH -` writes it. InputError if the pipe
    ends inside a frame, or before reading when the size is not equirect or wider than MAX_FRAME_WIDTH."""
    check_equirect_size(width, height)
    if width > MAX_FRAME_WIDTH:
        raise InputError(f"frames of {width}x{height} are too large: width must be at most {MAX_FRAME_WIDTH}")
    return _raw_frames(stream, width, height)


def _raw_frames(stream: BinaryIO, width: int, height: int) -> Iterator[np.ndarray]:
    size = width * height * 3
    while data := stream.read(size):
        if len(data) < size:
            raise InputError(f"the raw video ended inside a frame ({len(data)} of {size} bytes)")
        yield np.frombuffer(data, np.uint8).reshape(height, width, 3)


def _decode(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * stream.time_base) if frame.pts is not None else len(times))
    times = np.asarray(times)
    return frames, times - (times[0] if len(times) else 0.0)


def model_pixels(frames: np.ndarray, frame_size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, 3, h, w), resized (antialiased bilinear) to frame_size = (h, w)
    when given: what the video encoder reads, as 8-bit values (a quarter of the bytes of float32 on
    the serving path), so training crops, cached clips and streamed frames all reach it the same way."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise InputError(f"frames must be (T, H, W, 3) RGB with T >= 1, got {frames.shape}")
    if not frames.flags.writeable:  # decoded from a message: torch wants memory it may write
        frames = frames.copy()
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (T, 3, H, W)
    resize = frame_size is not None and tuple(x.shape[-2:]) != tuple(frame_size)
    if x.dtype == torch.uint8 and not resize:
        return np.ascontiguousarray(x.numpy())
    x = x.float()
    if resize:
        height, width = frame_size
        if height < 1 or width != 2 * height:
            raise InputError(f"frame_size must be (H, W) with W = 2·H (equirect), got {frame_size}")
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0.0, 255.0).to(torch.uint8).numpy()


def model_frames(frames: np.ndarray, frame_size: tuple[int, int] | None = None) -> torch.Tensor:
    """`model_pixels` as float32 in [0, 1] (on the 1/255 grid), what the modules compute with."""
    return pixels_to_float(torch.from_numpy(model_pixels(frames, frame_size)))


def pixels_to_float(pixels: torch.Tensor) -> torch.Tensor:
    """8-bit pixel values -> float32 in [0, 1]."""
    return pixels.float() / 255.0
