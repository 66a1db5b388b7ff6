"""What a SynthSphere dataset looks like: one validated config, with presets."""

import math
from dataclasses import dataclass, field

from swansphere.conventions import SAMPLE_RATE, VIDEO_FPS
from swansphere.synth.scenes import MOTIONS
from swansphere.synth.sounds import SOUND_CLASSES
from swansphere.trajectory import POINT_INTERVAL_S
from swansphere.video import MAX_FRAME_WIDTH

MIN_WIDTH = 32
"""Narrower frames leave too few pixels per object to see it."""
MAX_SECONDS = 600.0
"""Longest clip (10 minutes, the longest stream the gateway takes): a clip is rendered whole in
memory, and a far longer one fails allocating it instead of with a message."""


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    seconds: float = 10.0
    """Clip length; the paper's clips are 10 s. A multiple of 0.25 s so frames and points line up."""
    width: int = 256
    """Equirectangular frame width in pixels; height = width / 2 (DESIGN §4)."""
    max_sources: int = 3
    """Each clip has 1..max_sources sources of distinct classes."""
    reverb: bool = True
    """Add room reverberation (image-source early reflections + diffuse tail)."""
    rt60_s: float = 0.4
    """Reverberation time of the room (s): a furnished living room."""
    ambience_db: float | None = -30.0
    """Level of diffuse ambience relative to the direct sound (dB, W channel); None: no ambience."""
    classes: tuple[str, ...] = field(default_factory=lambda: tuple(SOUND_CLASSES))
    """Sound classes to draw from."""
    motions: tuple[str, ...] = MOTIONS
    """Motions to draw from."""

    def __post_init__(self) -> None:
        steps = self.seconds / POINT_INTERVAL_S
        if not (math.isfinite(steps) and 0 < self.seconds <= MAX_SECONDS) or abs(steps - round(steps)) > 1e-9:
            raise ValueError(
                f"seconds must be a positive multiple of {POINT_INTERVAL_S} up to {MAX_SECONDS:g}, "
                f"got {self.seconds:g}"
            )
        if self.width < MIN_WIDTH or self.width % 2:
            raise ValueError(f"width must be even and at least {MIN_WIDTH}, got {self.width}")
        if self.width > MAX_FRAME_WIDTH:
            raise ValueError(f"width must be at most {MAX_FRAME_WIDTH}, got {self.width}")
        if not 1 <= self.max_sources <= len(self.classes):
            raise ValueError(f"max_sources must be in 1..{len(self.classes)}, got {self.max_sources}")
        if not 0.1 <= self.rt60_s <= 3.0:
            raise ValueError(f"rt60_s must be in [0.1, 3.0] s, got {self.rt60_s}")
        if self.ambience_db is not None and not -80.0 <= self.ambience_db <= 0.0:
            raise ValueError(f"ambience_db must be in [-80, 0] dB, got {self.ambience_db}")
        unknown = set(self.classes) - set(SOUND_CLASSES) or set(self.motions) - set(MOTIONS)
        if unknown or not self.classes or not self.motions:
            raise ValueError(f"unknown or no classes/motions: {sorted(unknown)}")

    @property
    def height(self) -> int:
        return self.width // 2

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def fps(self) -> int:
        return VIDEO_FPS

    @property
    def n_samples(self) -> int:
        return round(self.seconds * SAMPLE_RATE)

    @property
    def n_frames(self) -> int:
        return round(self.seconds * VIDEO_FPS)

    @classmethod
    def paper(cls) -> "SynthConfig":
        """10 s clips at the paper's rates, 256x128 frames, up to 3 sources, reverb and ambience."""
        return cls()

    @classmethod
    def tiny(cls) -> "SynthConfig":
        """Short, small clips for tests and the CPU demo model."""
        return cls(seconds=2.0, width=64, max_sources=2)
