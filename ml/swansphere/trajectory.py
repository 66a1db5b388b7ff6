"""Trajectory JSON (DESIGN §5): ground truth of SynthSphere, input of `spatialize`, output of `caption`.

`{"sample_rate": 44100, "duration": S, "sources": [{"class": "...", "trajectory": [{"t": 0.0,
"azimuth": deg, "elevation": deg, "distance": m}, ...]}], "caption": "..."}`; points every 0.25 s,
linear interpolation between them with azimuth on the shortest arc.
"""

import itertools
import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from swansphere import storage
from swansphere.conventions import SAMPLE_RATE, wrap_degrees
from swansphere.errors import InputError

POINT_INTERVAL_S = 0.25
"""Spacing of trajectory points written by SynthSphere and the captioner."""


class TrajectoryPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    t: float = Field(ge=0.0, description="seconds from the start of the clip")
    azimuth: float = Field(ge=-360.0, le=360.0, description="degrees, 0 = front, +90 = left")
    elevation: float = Field(ge=-90.0, le=90.0, description="degrees, +90 = up")
    distance: float = Field(default=1.0, gt=0.0, description="metres")


class Source(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    sound_class: str = Field(alias="class")
    trajectory: list[TrajectoryPoint] = Field(min_length=1)

    @field_validator("trajectory")
    @classmethod
    def _times_increase(cls, points: list[TrajectoryPoint]) -> list[TrajectoryPoint]:
        times = [p.t for p in points]
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError("trajectory times must strictly increase")
        return points

    def at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(azimuth, elevation, distance) at `times` (s); held constant outside the points."""
        t = np.array([p.t for p in self.trajectory])
        az = np.array([p.azimuth for p in self.trajectory])
        # Shortest arc: unwrap each step to (-180, 180] before interpolating.
        az_unwrapped = az[0] + np.concatenate([[0.0], np.cumsum(wrap_degrees(np.diff(az)))])
        el = np.array([p.elevation for p in self.trajectory])
        dist = np.array([p.distance for p in self.trajectory])
        times = np.asarray(times, dtype=np.float64)
        return (
            wrap_degrees(np.interp(times, t, az_unwrapped)),
            np.interp(times, t, el),
            np.interp(times, t, dist),
        )


class Scene(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    sample_rate: int = Field(default=SAMPLE_RATE, gt=0)
    duration: float = Field(gt=0.0)
    sources: list[Source] = Field(default_factory=list)
    caption: str = ""

    def to_json(self) -> str:
        return json.dumps(self.model_dump(by_alias=True, mode="json"), indent=2) + "\n"


def parse_scene(text: str, origin: str = "trajectory JSON") -> Scene:
    """Parse and validate; raises InputError with one line naming the first problem."""
    try:
        return Scene.model_validate_json(text)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        raise InputError(f"{origin}: invalid trajectory JSON at {where}: {first['msg']}") from None


def load_scene(uri: str | Path) -> Scene:
    """The trajectory JSON at a local path or s3:// URI: the one reader every command uses, so a file
    that is missing, not UTF-8 text or not a valid trajectory is one InputError naming it."""
    data = storage.read_bytes(uri)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{uri}: trajectory JSON is not UTF-8 text") from None
    return parse_scene(text, origin=str(uri))
