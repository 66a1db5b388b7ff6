"""Pictures of where the sound is: segment DoA over time against a trajectory (DESIGN §4 angles).

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend switch), so it
works headless and in threads. The PNG goes through `storage`, so `s3://` destinations work too.
"""

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from swansphere import storage
from swansphere.doa import SegmentDoA
from swansphere.errors import InputError
from swansphere.trajectory import Scene, parse_scene

TRAJECTORY_STEP_S = 0.05
"""Sampling of the reference trajectory's line (its points are 0.25 s apart, interpolated between)."""


def plot_doa(
    segments: Sequence[SegmentDoA],
    out_png: str | Path,
    trajectory: Scene | dict[str, Any] | None = None,
    title: str = "",
) -> None:
    """Azimuth and elevation over time: each segment's DoA (segment protocol) as a bar over its span,
    and the first source of a trajectory JSON (reference or visual source) as a line when given."""
    if not segments:
        raise InputError("no DoA segments to plot")
    scene = _scene(trajectory)
    figure = Figure(figsize=(9.0, 5.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    azimuth_axes, elevation_axes = figure.subplots(2, 1, sharex=True)
    starts, ends = np.array([s.t0 for s in segments]), np.array([s.t1 for s in segments])
    centres = (starts + ends) / 2
    for axes, values, limit in (
        (azimuth_axes, [s.azimuth for s in segments], 180.0),
        (elevation_axes, [s.elevation for s in segments], 90.0),
    ):
        axes.hlines(values, starts, ends, colors="tab:blue", linewidth=3)
        axes.plot(centres, values, "o", color="tab:blue", label="generated (segment DoA)")
        axes.set_ylim(-limit, limit)
        axes.set_yticks(np.linspace(-limit, limit, 5))
        axes.grid(alpha=0.3)
    if scene is not None:
        _draw_trajectory(azimuth_axes, elevation_axes, scene, max(scene.duration, float(ends[-1])))
    azimuth_axes.set_ylabel("azimuth (°, +90 = left)")
    elevation_axes.set_ylabel("elevation (°, +90 = up)")
    elevation_axes.set_xlabel("time (s)")
    azimuth_axes.legend(loc="upper right", fontsize="small")
    if title:
        figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    storage.write_bytes(out_png, buffer.getvalue())


def _draw_trajectory(azimuth_axes: Any, elevation_axes: Any, scene: Scene, duration: float) -> None:
    source = scene.sources[0]
    times = np.arange(0.0, duration + TRAJECTORY_STEP_S / 2, TRAJECTORY_STEP_S)
    azimuth, elevation, _ = source.at(times)
    label = f"reference: {source.sound_class}"
    azimuth_axes.plot(*_break_at_wrap(times, azimuth), color="tab:orange", linewidth=2, label=label)
    elevation_axes.plot(times, elevation, color="tab:orange", linewidth=2, label=label)


def _break_at_wrap(times: np.ndarray, azimuth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A gap (NaN) where the azimuth wraps across ±180°, so the line does not cross the plot."""
    wraps = np.flatnonzero(np.abs(np.diff(azimuth)) > 180.0) + 1
    return np.insert(times, wraps, np.nan), np.insert(azimuth, wraps, np.nan)


def _scene(trajectory: Scene | dict[str, Any] | None) -> Scene | None:
    if trajectory is None:
        return None
    scene = trajectory if isinstance(trajectory, Scene) else parse_scene(json.dumps(trajectory))
    if not scene.sources:
        raise InputError("trajectory JSON has no sources to plot")
    return scene
