"""Sampling SynthSphere scenes: which sources, how loud, and how they move.

Trajectory points are written every `trajectory.POINT_INTERVAL_S` from 0 to the clip's end; the
renderer interpolates them per sample (`foa.encode_source`) and per frame.
"""

from dataclasses import dataclass

import numpy as np

from swansphere.conventions import wrap_degrees
from swansphere.trajectory import POINT_INTERVAL_S, Source, TrajectoryPoint

MOTIONS = ("static", "pan", "circle", "approach", "recede")
"""static: fixed; pan: constant angular velocity over 45-150°; circle: one full turn over the clip;
approach / recede: fixed direction, distance 4-5 m <-> 1-1.5 m."""

ELEVATION_RANGE = (-20.0, 40.0)
"""Sources stand around the listener, from slightly below to well above the horizon (degrees)."""

DISTANCE_RANGE = (1.0, 3.0)
"""Metres, for sources that do not change distance."""


@dataclass(frozen=True)
class PlannedSource:
    source: Source
    """Ground truth: class and trajectory, as written to the trajectory JSON."""
    motion: str
    """One of MOTIONS; what the trajectory was drawn from."""
    level_db: float
    """Gain of the unit-RMS dry signal at the 1 m reference distance, in dB."""


def sample_sources(
    rng: np.random.Generator,
    duration: float,
    max_sources: int,
    classes: tuple[str, ...],
    motions: tuple[str, ...],
) -> list[PlannedSource]:
    """1..max_sources sources of distinct classes, each with a random motion and level."""
    count = int(rng.integers(1, max_sources + 1))
    chosen = rng.choice(len(classes), size=count, replace=False)
    planned = []
    for class_index in chosen:
        motion = motions[int(rng.integers(len(motions)))]
        points = sample_trajectory(rng, motion, duration)
        source = Source(sound_class=classes[int(class_index)], trajectory=points)
        planned.append(PlannedSource(source, motion, float(rng.uniform(-6.0, 0.0))))
    return planned


def sample_trajectory(rng: np.random.Generator, motion: str, duration: float) -> list[TrajectoryPoint]:
    """Points every POINT_INTERVAL_S over [0, duration] for one motion."""
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; known: {', '.join(MOTIONS)}")
    times = np.arange(round(duration / POINT_INTERVAL_S) + 1) * POINT_INTERVAL_S
    fraction = times / duration
    azimuth = np.full_like(times, rng.uniform(-180.0, 180.0))
    elevation = np.full_like(times, rng.uniform(*ELEVATION_RANGE))
    distance = np.full_like(times, rng.uniform(*DISTANCE_RANGE))
    turn = 1.0 if rng.random() < 0.5 else -1.0  # +1: counter-clockwise seen from above
    near, far = rng.uniform(1.0, 1.5), rng.uniform(4.0, 5.0)
    if motion == "pan":
        azimuth += turn * rng.uniform(45.0, 150.0) * fraction
    elif motion == "circle":
        azimuth += turn * 360.0 * fraction
    elif motion == "approach":
        distance = far + (near - far) * fraction
    elif motion == "recede":
        distance = near + (far - near) * fraction
    return [
        TrajectoryPoint(t=float(t), azimuth=float(a), elevation=float(e), distance=float(d))
        for t, a, e, d in zip(times, wrap_degrees(azimuth), elevation, distance, strict=True)
    ]
