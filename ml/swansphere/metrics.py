"""Spatial error metrics, named by protocol and unit (DESIGN §5b).

Angle errors in degrees (one function set), the paper protocol's clip comparison in radians
(ΔAzimuth, ΔElevation, ΔAngular of the paper's tables), and the segment protocol against a
ground-truth trajectory in degrees.
"""

import numpy as np

from swansphere.conventions import direction_to_vector, vector_to_direction, wrap_degrees
from swansphere.doa import SegmentDoA, clip_doa_rad
from swansphere.errors import InputError
from swansphere.foa import distance_gain
from swansphere.trajectory import Source

TRUTH_SAMPLES_PER_SEGMENT = 64
"""Points of the ground-truth trajectory averaged over one segment's time span."""


def azimuth_error_deg(azimuth_a: np.ndarray | float, azimuth_b: np.ndarray | float) -> np.ndarray:
    """Circular azimuth error |wrap(a − b)| in [0, 180]."""
    return np.abs(wrap_degrees(np.asarray(azimuth_a) - np.asarray(azimuth_b)))


def elevation_error_deg(elevation_a: np.ndarray | float, elevation_b: np.ndarray | float) -> np.ndarray:
    """Absolute elevation error."""
    return np.abs(np.asarray(elevation_a, dtype=np.float64) - np.asarray(elevation_b, dtype=np.float64))


def angular_error_deg(
    azimuth_a: np.ndarray | float,
    elevation_a: np.ndarray | float,
    azimuth_b: np.ndarray | float,
    elevation_b: np.ndarray | float,
) -> np.ndarray:
    """Great-circle angle between two directions, as atan2(|a×b|, a·b) (accurate near 0° and 180°)."""
    a = direction_to_vector(azimuth_a, elevation_a)
    b = direction_to_vector(azimuth_b, elevation_b)
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, axis=-1)))


def paper_doa_errors(
    generated_foa_list: list[np.ndarray], reference_foa_list: list[np.ndarray]
) -> dict[str, float]:
    """Paper protocol: clip-level DoA of each generated/reference pair, errors in radians, mean over clips."""
    if len(generated_foa_list) != len(reference_foa_list) or not generated_foa_list:
        raise InputError(
            f"need the same, non-zero number of generated and reference clips, "
            f"got {len(generated_foa_list)} and {len(reference_foa_list)}"
        )
    generated = np.degrees([clip_doa_rad(foa) for foa in generated_foa_list])  # (C, 2)
    reference = np.degrees([clip_doa_rad(foa) for foa in reference_foa_list])  # (C, 2)
    return {
        "delta_azimuth_rad": float(np.radians(azimuth_error_deg(generated[:, 0], reference[:, 0])).mean()),
        "delta_elevation_rad": float(
            np.radians(elevation_error_deg(generated[:, 1], reference[:, 1])).mean()
        ),
        "delta_angular_rad": float(np.radians(angular_error_deg(*generated.T, *reference.T)).mean()),
    }


def trajectory_errors(segments: list[SegmentDoA], source: Source) -> dict:
    """Segment protocol against a ground-truth source, in degrees.

    Each segment's truth is the source direction averaged over the segment's time span on unit
    vectors, weighted by the inverse-square energy the estimator sees (foa.distance_gain²).
    """
    if not segments:
        raise InputError("no segments to compare with the trajectory")
    errors = []
    for segment in segments:
        step = (segment.t1 - segment.t0) / TRUTH_SAMPLES_PER_SEGMENT
        times = segment.t0 + step * (np.arange(TRUTH_SAMPLES_PER_SEGMENT) + 0.5)
        azimuth, elevation, distance = source.at(times)
        weights = distance_gain(distance) ** 2  # (K,)
        truth_azimuth, truth_elevation = vector_to_direction(
            weights @ direction_to_vector(azimuth, elevation)
        )
        errors.append(
            float(angular_error_deg(segment.azimuth, segment.elevation, truth_azimuth, truth_elevation))
        )
    return {
        "protocol": "segment",
        "angular_deg": errors,
        "angular_deg_median": float(np.median(errors)),
        "angular_deg_mean": float(np.mean(errors)),
    }
