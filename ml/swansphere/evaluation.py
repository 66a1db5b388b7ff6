"""`swansphere eval`: the paper's §4 metrics that can be computed here (DESIGN §5, §5b).

Generated and reference AmbiX files are paired by file name (a folder or an `s3://` prefix each).
Spatial accuracy is reported under both DoA protocols, never mixed: the segment protocol (paper
App. A.2, degrees; segment by segment) and the paper protocol (one clip-level intensity direction,
radians; what the paper's ΔAngular = 1.03 means). With `trajectory=True` the generated audio is also
scored against the reference folder's ground-truth trajectory JSON (segment protocol, first source).

Distribution metric: the Fréchet distance (FD, as FAD) between the embedding sets of the W channel
(omnidirectional, i.e. mono) of generated and reference clips. The paper embeds with OpenL3, whose
weights cannot be fetched on these machines, so the offline default is aiSFX (Ma & Lerch, ISMIR 2022),
whose weights ship inside its wheel: it *stands in* for OpenL3 and its FD is not comparable with the
paper's figures (`embeddings.py`, which also loads OpenL3 and PaSST from local weights).
"""

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from swansphere import storage
from swansphere.audio import read_foa, resample
from swansphere.conventions import SAMPLE_RATE, W
from swansphere.doa import SegmentDoA, segment_doa
from swansphere.embeddings import Embedding
from swansphere.errors import InputError
from swansphere.metrics import (
    angular_error_deg,
    azimuth_error_deg,
    elevation_error_deg,
    paper_doa_errors,
    trajectory_errors,
)
from swansphere.trajectory import Source, parse_scene

AUDIO_SUFFIXES = (".wav", ".flac")
"""Files paired by name; anything else in the folders is ignored."""

MIN_FD_EMBEDDINGS = 2
"""A covariance needs at least two embeddings per set."""


# --- Pairing files by name ---------------------------------------------------------------------


def audio_files(folder: str | Path) -> dict[str, str]:
    """File stem -> URI of the AmbiX files directly inside a folder or `s3://` prefix."""
    names = storage.list_names(folder)
    files: dict[str, str] = {}
    for name in sorted(names):
        stem, suffix = posixpath.splitext(name)
        if suffix.lower() not in AUDIO_SUFFIXES:
            continue
        if stem in files:
            raise InputError(f"{folder}: two audio files are named {stem!r} (one per name, please)")
        files[stem] = storage.join(folder, name)
    return files


def find_pairs(generated: str | Path, reference: str | Path) -> tuple[list[tuple[str, str, str]], dict]:
    """[(name, generated URI, reference URI)] sorted by name, and the names that found no partner."""
    generated_files, reference_files = audio_files(generated), audio_files(reference)
    names = sorted(generated_files.keys() & reference_files.keys())
    if not names:
        raise InputError(
            f"no audio file names in common between {generated} ({len(generated_files)} file(s)) and "
            f"{reference} ({len(reference_files)} file(s))"
        )
    unpaired = {
        "generated": sorted(generated_files.keys() - reference_files.keys()),
        "reference": sorted(reference_files.keys() - generated_files.keys()),
    }
    return [(name, generated_files[name], reference_files[name]) for name in names], unpaired


def read_pair(generated_uri: str, reference_uri: str) -> tuple[np.ndarray, np.ndarray]:
    """Both files as (4, N) at 44.1 kHz, cut to their common length."""
    generated, reference = _read_foa_uri(generated_uri), _read_foa_uri(reference_uri)
    length = min(generated.shape[1], reference.shape[1])
    return generated[:, :length], reference[:, :length]


def _read_foa_uri(uri: str) -> np.ndarray:
    with storage.local_copy(uri) as path:
        foa, sample_rate = read_foa(path)
    return resample(foa, sample_rate, SAMPLE_RATE)


def read_source(uri: str) -> Source:
    """First source of a trajectory JSON (local or `s3://`)."""
    scene = parse_scene(storage.read_bytes(uri).decode("utf-8", errors="replace"), origin=uri)
    if not scene.sources:
        raise InputError(f"{uri}: trajectory JSON has no sources")
    return scene.sources[0]


# --- DoA scores of one pair --------------------------------------------------------------------


def segment_errors(generated: list[SegmentDoA], reference: list[SegmentDoA]) -> dict[str, list[float]]:
    """Segment protocol, generated vs reference, segment by segment, in degrees."""
    count = min(len(generated), len(reference))
    g = np.array([(s.azimuth, s.elevation) for s in generated[:count]])  # (S, 2)
    r = np.array([(s.azimuth, s.elevation) for s in reference[:count]])  # (S, 2)
    return {
        "delta_azimuth_deg": azimuth_error_deg(g[:, 0], r[:, 0]).tolist(),
        "delta_elevation_deg": elevation_error_deg(g[:, 1], r[:, 1]).tolist(),
        "delta_angular_deg": angular_error_deg(g[:, 0], g[:, 1], r[:, 0], r[:, 1]).tolist(),
    }


@dataclass
class PairScore:
    """Both protocols for one clip pair; per-segment lists in degrees, paper values in radians."""

    name: str
    seconds: float
    segment: dict[str, list[float]]
    paper: dict[str, float]
    trajectory: dict[str, list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "name": self.name,
            "seconds": self.seconds,
            "segment": {key: stats(values) for key, values in self.segment.items()},
            "paper": self.paper,
        }
        if self.trajectory is not None:
            result["trajectory"] = {key: stats(values) for key, values in self.trajectory.items()}
        return result


def score_pair(
    name: str,
    generated: np.ndarray,
    reference: np.ndarray,
    *,
    source: Source | None = None,
    segment_s: float = 1.0,
) -> PairScore:
    """Segment protocol (degrees), paper protocol (radians) and, given a ground-truth source, the
    segment protocol of both files against it."""
    generated_segments = segment_doa(generated, SAMPLE_RATE, segment_s)
    reference_segments = segment_doa(reference, SAMPLE_RATE, segment_s)
    truth = None
    if source is not None:
        truth = {
            "generated_vs_truth_deg": trajectory_errors(generated_segments, source)["angular_deg"],
            "reference_vs_truth_deg": trajectory_errors(reference_segments, source)["angular_deg"],
        }
    return PairScore(
        name=name,
        seconds=generated.shape[1] / SAMPLE_RATE,
        segment=segment_errors(generated_segments, reference_segments),
        paper=paper_doa_errors([generated], [reference]),
        trajectory=truth,
    )


def stats(values: list[float] | np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "median": float(np.median(values)), "count": int(values.size)}


# --- The whole evaluation ----------------------------------------------------------------------


def evaluate(
    generated: str | Path,
    reference: str | Path,
    *,
    embedding: Embedding | None = None,
    trajectory: bool = False,
    segment_s: float = 1.0,
) -> dict[str, Any]:
    """Pairs files by name and reports both DoA protocols, the trajectory scores when asked, and the
    FD of `embedding` (None: no distribution metric). JSON-ready."""
    pairs, unpaired = find_pairs(generated, reference)
    scores: list[PairScore] = []
    generated_embeddings: list[np.ndarray] = []
    reference_embeddings: list[np.ndarray] = []
    for name, generated_uri, reference_uri in pairs:
        source = read_source(storage.join(reference, f"{name}.json")) if trajectory else None
        generated_foa, reference_foa = read_pair(generated_uri, reference_uri)
        scores.append(score_pair(name, generated_foa, reference_foa, source=source, segment_s=segment_s))
        if embedding is not None:
            generated_embeddings.append(embedding.embed(generated_foa[W], SAMPLE_RATE))
            reference_embeddings.append(embedding.embed(reference_foa[W], SAMPLE_RATE))
    truth = _pooled(scores, "trajectory", {"unit": "degree", "source": "first"}) if trajectory else None
    distribution = None
    if embedding is not None:
        distribution = _distribution(embedding, generated_embeddings, reference_embeddings)
    return {
        "generated": str(generated),
        "reference": str(reference),
        "clips": len(scores),
        "unpaired": unpaired,
        "segment_protocol": _pooled(scores, "segment", {"unit": "degree", "segment_s": segment_s}),
        "paper_protocol": _paper_summary(scores),
        "trajectory": truth,
        "distribution": distribution,
        "per_clip": [score.to_dict() for score in scores],
    }


def _pooled(scores: list[PairScore], part: str, header: dict[str, Any]) -> dict[str, Any]:
    """Segment-protocol errors pooled over every segment of every clip."""
    keys = getattr(scores[0], part).keys()
    pooled = {key: stats(np.concatenate([getattr(s, part)[key] for s in scores])) for key in keys}
    return {"protocol": "segment", **header, **pooled}


def _paper_summary(scores: list[PairScore]) -> dict[str, Any]:
    """Paper protocol: per-clip errors; the mean over clips is the paper's figure."""
    keys = scores[0].paper.keys()
    return {"protocol": "paper", "unit": "radian", **{k: stats([s.paper[k] for s in scores]) for k in keys}}


def _distribution(
    embedding: Embedding, generated: list[np.ndarray], reference: list[np.ndarray]
) -> dict[str, Any]:
    generated_set, reference_set = np.concatenate(generated), np.concatenate(reference)
    result: dict[str, Any] = {
        "metric": "frechet_distance",
        "embedding": embedding.name,
        "note": embedding.note,
        "channel": "W",
        "dim": int(generated_set.shape[1]),
        "n_generated": len(generated_set),
        "n_reference": len(reference_set),
        "value": None,
    }
    if min(len(generated_set), len(reference_set)) < MIN_FD_EMBEDDINGS:
        result["note"] += f"; FD needs at least {MIN_FD_EMBEDDINGS} embeddings per set"
        return result
    result["value"] = frechet_distance(generated_set, reference_set)
    return result


# --- Fréchet distance --------------------------------------------------------------------------


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between Gaussians fitted to two embedding sets (K, D): |μa − μb|² + tr(Σa + Σb − 2(Σa Σb)^½).

    tr((Σa Σb)^½) is taken as Σ √eig(Σa^½ Σb Σa^½), a symmetric PSD matrix with the same
    eigenvalues as Σa Σb, so rank-deficient covariances (few clips, many dimensions) stay real.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InputError(f"embedding sets must be (K, D) with the same D, got {a.shape} and {b.shape}")
    if min(len(a), len(b)) < MIN_FD_EMBEDDINGS:
        raise InputError(f"FD needs at least {MIN_FD_EMBEDDINGS} embeddings per set")
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)  # (D, D)
    root_a = _psd_sqrt(cov_a)
    eigenvalues = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    cross = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    mean_term = np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2)
    return float(max(0.0, mean_term + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ vectors.T
