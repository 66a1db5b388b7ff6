"""Spatial captioning (paper §3.5, App. A.2): DoA → smoothed per-second trajectory JSON → caption.

Stages 1-2 of the paper's pipeline (intensity-vector DoA, unit-vector smoothing, proximity) live in
`swansphere.doa`. This module writes their segments as trajectory JSON (DESIGN §5), reads the motion
off that trajectory, and turns it into a caption, either with rules (`RuleCaptioner`: offline,
deterministic) or with a chat model behind an OpenAI-compatible endpoint (`ChatCaptioner`: the
paper's multimodal fusion step, which used Gemini 2.5 Pro). `RuleCaptioner` also writes SynthSphere's
ground-truth captions from the true trajectories, so ground truth and pipeline use the same words.

Trajectory points sit at the centres of the DoA segments (1 s by default, "per-second" as in App.
A.2), not on the 0.25 s grid of SynthSphere: a finer grid would only interpolate, and the JSON format
allows any increasing times. `TrajectoryPoint` forbids extra fields, so the per-segment proximity,
diffuseness and energy travel beside the points, as `"analysis": [{"t", "proximity", "diffuseness",
"energy"}]` on the source (sources allow extra fields).
"""

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from swansphere.audio import read_foa, resample
from swansphere.conventions import (
    SAMPLE_RATE,
    VIDEO_FPS,
    direction_to_vector,
    vector_to_direction,
    wrap_degrees,
)
from swansphere.doa import SegmentDoA, segment_doa
from swansphere.equirect import column_azimuth, row_elevation
from swansphere.errors import InputError
from swansphere.trajectory import Scene, Source
from swansphere.video import read_video

UNKNOWN_CLASS = "unknown"
"""Sound class of the source when the caller names none."""

DEFAULT_SEGMENT_S = 1.0
"""DoA segment length (App. A.2: 1.0 s); also the spacing of the trajectory points."""

SILENCE_DB = -40.0
"""Segments this far below the loudest one carry no usable direction and are left out."""

VIDEO_AUDIO_TOLERANCE_S = 0.5
"""Largest difference between video and audio durations that still counts as the same clip."""

# --- Motion thresholds ----------------------------------------------------------------------------

PAN_MIN_DEG = 30.0
"""Net azimuth travel that counts as panning: well above the few degrees of DoA jitter on a static
source, and below the 45° of one direction sector, so a move to the next sector is always seen."""

CIRCLE_MIN_DEG = 300.0
"""Net azimuth travel that counts as circling: most of a turn; window-3 smoothing shortens the
measured travel of a full turn by up to one segment's step at each end."""

SWAY_MIN_DEG = 40.0
"""Largest angle from the mean direction that counts as moving back and forth when the net travel
is small: beyond the spread of a static source's estimates even in reverberant rooms."""

ELEVATION_CHANGE_DEG = 15.0
"""Elevation change from the first to the last point that counts as rising or falling."""

OVERHEAD_DEG = 65.0
"""Mean |elevation| beyond which azimuth means little: the source is described as overhead/below."""

APPROACH_RATIO = 2.0
"""Distance ratio between the first and last point that counts as approaching or receding: 6 dB of
level for an inverse-distance source, clearly audible and above the level noise of 1 s segments."""

PASS_RATIO = 1.5
"""How much farther than the closest interior point both ends must be for a pass-by; lower than
APPROACH_RATIO because 1 s energy averaging flattens the short minimum of a pass."""


# --- Trajectory JSON from DoA segments -----------------------------------------------------------


def trajectory_from_doa(
    segments: Sequence[SegmentDoA],
    duration: float,
    sample_rate: int = SAMPLE_RATE,
    sound_class: str = UNKNOWN_CLASS,
) -> Scene:
    """The dominant source's trajectory, one point per audible segment, at the segment centre.

    Raises InputError when every segment is silent (no direction to describe).
    """
    loudest = max((s.energy for s in segments), default=0.0)
    if loudest <= 0.0:
        raise InputError("audio is silent: no direction to caption")
    floor = loudest * 10.0 ** (SILENCE_DB / 10.0)
    audible = [s for s in segments if s.energy >= floor]
    points = [
        {
            "t": round((s.t0 + s.t1) / 2.0, 6),
            "azimuth": round(float(s.azimuth), 2),
            "elevation": round(float(s.elevation), 2),
            "distance": round(float(s.distance), 3),
        }
        for s in audible
    ]
    analysis = [
        {
            "t": point["t"],
            "proximity": round(float(s.proximity), 3),
            "diffuseness": round(float(s.diffuseness), 3),
            "energy": float(s.energy),
        }
        for point, s in zip(points, audible, strict=True)
    ]
    source = Source.model_validate({"class": sound_class, "trajectory": points, "analysis": analysis})
    return Scene(sample_rate=sample_rate, duration=duration, sources=[source])


# --- Motion analysis ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Motion:
    """What a trajectory does, read off its points; `RuleCaptioner` puts it into words."""

    start: tuple[float, float]
    """(azimuth, elevation) of the first point, degrees."""
    end: tuple[float, float]
    """(azimuth, elevation) of the last point, degrees."""
    mean: tuple[float, float]
    """Direction of the mean unit vector, degrees."""
    azimuth_travel: float
    """Signed, unwrapped azimuth travel, degrees; + = counter-clockwise seen from above."""
    horizontal: str
    """"static", "sway", "pan_left" / "pan_right" (counter-clockwise / clockwise), "circle_left" /
    "circle_right" (counter-clockwise / clockwise) or "overhead" (azimuth undefined)."""
    vertical: str
    """"level", "rising" or "falling"."""
    range: str
    """"steady", "approaching", "receding" or "passing" (approaches, then recedes)."""


def analyse_motion(source: Source) -> Motion:
    """Classify the motion of a trajectory with the thresholds above."""
    azimuth = np.array([p.azimuth for p in source.trajectory])
    elevation = np.array([p.elevation for p in source.trajectory])
    distance = np.array([p.distance for p in source.trajectory])
    vectors = direction_to_vector(azimuth, elevation)  # (P, 3)
    # Mean azimuth from the mean vector (no jump at ±180°); mean elevation directly, since the mean
    # vector of a circling source is short and would point straight up or down.
    mean_az, mean_el = float(vector_to_direction(vectors.mean(axis=0))[0]), float(elevation.mean())
    # Unwrap step by step: steps between 1 s points stay well under 180° for sources we can follow.
    travel = float(np.sum(wrap_degrees(np.diff(azimuth))))
    spread = float(
        np.degrees(np.arccos(np.clip(vectors @ direction_to_vector(mean_az, mean_el), -1, 1))).max()
    )
    return Motion(
        start=(float(azimuth[0]), float(elevation[0])),
        end=(float(azimuth[-1]), float(elevation[-1])),
        mean=(mean_az, mean_el),
        azimuth_travel=travel,
        horizontal=_horizontal(travel, spread, mean_el),
        vertical=_vertical(float(elevation[-1] - elevation[0])),
        range=_range(distance),
    )


def _horizontal(travel: float, spread: float, mean_elevation: float) -> str:
    side = "left" if travel > 0 else "right"
    if abs(mean_elevation) > OVERHEAD_DEG:
        return "overhead"
    if abs(travel) >= CIRCLE_MIN_DEG:
        return f"circle_{side}"
    if abs(travel) >= PAN_MIN_DEG:
        return f"pan_{side}"
    return "sway" if spread >= SWAY_MIN_DEG else "static"


def _vertical(change: float) -> str:
    if change >= ELEVATION_CHANGE_DEG:
        return "rising"
    if change <= -ELEVATION_CHANGE_DEG:
        return "falling"
    return "level"


def _range(distance: np.ndarray) -> str:
    first, last = distance[0], distance[-1]
    closest = distance[1:-1].min() if len(distance) > 2 else min(first, last)
    if min(first, last) >= PASS_RATIO * closest:
        return "passing"
    if first >= APPROACH_RATIO * last:
        return "approaching"
    if last >= APPROACH_RATIO * first:
        return "receding"
    return "steady"


# --- Words ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Place:
    """One way of naming a direction in each role it plays in a sentence."""

    at: str  # where it is: "behind the listener"
    origin: str  # where it comes from: "from behind"
    goal: str  # where it goes: "to the back"


SECTORS = ("front", "front-left", "left", "back-left", "behind", "back-right", "right", "front-right")
"""Azimuth sectors of 45°, centred on 0°, 45°, ..., counter-clockwise (+azimuth = left)."""

_SECTOR_PLACES = {
    "front": _Place("in front of the listener", "from the front", "to the front"),
    "behind": _Place("behind the listener", "from behind", "to the back"),
    "left": _Place("on the left", "from the left", "to the left"),
    "right": _Place("on the right", "from the right", "to the right"),
} | {name: _Place(f"to the {name}", f"from the {name}", f"to the {name}") for name in SECTORS[1::2]}

_ELEVATION_BANDS = (
    (OVERHEAD_DEG, _Place("overhead", "from overhead", "overhead")),
    (35.0, _Place("above", "from above", "high above")),
    (10.0, _Place("slightly above", "from slightly above", "slightly above ear level")),
    (-10.0, _Place("at ear level", "from ear level", "ear level")),
    (-35.0, _Place("slightly below", "from slightly below", "slightly below ear level")),
    (-OVERHEAD_DEG, _Place("below", "from below", "far below")),
    (-90.0, _Place("directly below", "from directly below", "directly below")),
)
"""(lowest elevation of the band, words), top down: |el| < 10° is ear level, within DoA error."""

_VERBS = {
    "approach": ("approaches", "approaching"),
    "circle": ("circles", "circling"),
    "come": ("comes", "coming"),
    "drift": ("drifts", "drifting"),
    "fade": ("fades", "fading"),
    "move": ("moves", "moving"),
    "pass": ("passes", "passing"),
    "recede": ("recedes", "receding"),
    "stay": ("stays", "staying"),
}
"""Third person and gerund of the motion verbs, so clauses read after "a sound" or "... while"."""

SOUND_VERBS = {
    "baby": "cries",
    "bell": "rings",
    "bird": "sings",
    "cat": "meows",
    "dog": "barks",
    "drum": "beats",
    "engine": "hums",
    "man": "speaks",
    "phone": "rings",
    "piano": "plays",
    "siren": "wails",
    "speech": "talks",
    "water": "flows",
    "woman": "speaks",
}
"""What a few common classes do, for "a dog barks while circling ..."; other classes go without."""

SUBJECTS = {"speech": "someone", "water": "water"}
"""Classes that do not read as "a CLASS": speech is someone talking, water a mass noun."""


def direction_words(azimuth: float) -> str:
    """Sector name of an azimuth in degrees: "front", "front-left", ..., "behind", ..., "right"."""
    return SECTORS[int(np.round(float(wrap_degrees(azimuth)) / 45.0)) % len(SECTORS)]


def elevation_words(elevation: float) -> str:
    """ "overhead", "above", "slightly above", "at ear level", "slightly below", "below" or
    "directly below"."""
    return _elevation_place(elevation).at


def _elevation_place(elevation: float) -> _Place:
    return next(place for lowest, place in _ELEVATION_BANDS if elevation > lowest or lowest == -90.0)


def _place(azimuth: float) -> _Place:
    return _SECTOR_PLACES[direction_words(azimuth)]


class Captioner(Protocol):
    """Turns a trajectory scene (and optionally a text summary of its video) into a caption."""

    name: ClassVar[str]

    def caption(self, scene: Scene, video: str | None = None) -> str: ...


class RuleCaptioner:
    """Deterministic captions from the motion of each source: direction, motion, elevation."""

    name: ClassVar[str] = "rule"

    def caption(self, scene: Scene, video: str | None = None) -> str:
        """One sentence per source, in the scene's order; `video` is not used: the rules only know the
        trajectory."""
        if not scene.sources:
            raise InputError("scene has no source to caption")
        return " ".join(_sentence(source) for source in scene.sources)


def _sentence(source: Source) -> str:
    """ "A dog barks while circling the listener clockwise, starting from the left, at ear level." """
    motion = analyse_motion(source)
    subject, sound_verb = _subject(source.sound_class)
    clauses = _clauses(motion)
    if sound_verb is None:
        body = _join([f"{_VERBS[verb][0]} {rest}".strip() for verb, rest in clauses])
    elif clauses[0][0] == "stay":
        body = f"{sound_verb} {clauses[0][1]}"
    else:
        body = f"{sound_verb} while " + _join([f"{_VERBS[verb][1]} {rest}".strip() for verb, rest in clauses])
    sentence = f"{subject} {body}{_vertical_words(motion)}."
    return sentence[0].upper() + sentence[1:]


def _subject(sound_class: str) -> tuple[str, str | None]:
    """("a dog", "barks"), ("someone", "talks") for speech, or ("a sound", None) for an unknown class."""
    label = " ".join(sound_class.replace("_", " ").split())
    if not label or label.lower() == UNKNOWN_CLASS:
        return "a sound", None
    verb = SOUND_VERBS.get(label.lower())
    if label.lower() in SUBJECTS:
        return SUBJECTS[label.lower()], verb
    if label.lower().split()[0] in ("a", "an", "the"):
        return label, verb
    return ("an " if label[0].lower() in "aeiou" else "a ") + label, verb


def _clauses(motion: Motion) -> list[tuple[str, str]]:
    """(verb, rest) clauses for the horizontal and range motion, in the order they happen."""
    start, end, mean = _place(motion.start[0]), _place(motion.end[0]), _place(motion.mean[0])
    moves_sector = direction_words(motion.start[0]) != direction_words(motion.end[0])
    if motion.horizontal == "overhead":
        start = end = mean = _elevation_place(motion.mean[1])
    horizontal = _horizontal_clause(motion, start, end, mean, moves_sector)
    sweeps = motion.horizontal.startswith("pan") and moves_sector
    if motion.range == "passing":
        if sweeps:
            return [("approach", start.origin), ("pass", end.goal)]
        if horizontal is None:
            return [("approach", start.origin), ("pass", "close by"), ("recede", "")]
        return [horizontal, ("pass", "close by")]
    if motion.range == "approaching":
        if horizontal is None:
            return [("approach", start.origin)]
        if sweeps:
            return [("approach", start.origin), ("move", end.goal)]
        return [horizontal, ("come", "closer")]
    if motion.range == "receding":
        if horizontal is None:
            return [("move", f"away {mean.at}")]
        return [horizontal, ("fade", "into the distance")]
    return [horizontal or ("stay", mean.at)]


def _horizontal_clause(
    motion: Motion, start: _Place, end: _Place, mean: _Place, moves_sector: bool
) -> tuple[str, str] | None:
    """The azimuth motion as one clause; None when the source keeps its direction."""
    if motion.horizontal.startswith("circle"):
        sense = "counter-clockwise" if motion.horizontal == "circle_left" else "clockwise"
        turns = round(abs(motion.azimuth_travel) / 360.0)
        times = {0: "", 1: "", 2: " twice"}.get(turns, f" {turns} times")
        return ("circle", f"the listener {sense}{times}, starting {start.origin}")
    if motion.horizontal.startswith("pan"):
        if moves_sector:
            return ("move", f"{start.origin} {end.goal}")
        return ("drift", f"{_drift_side(motion)}, staying {mean.at}")
    if motion.horizontal == "sway":
        return ("move", f"back and forth {mean.at}")
    return None


def _drift_side(motion: Motion) -> str:
    """The listener-relative way a short pan goes: the larger horizontal component of the move."""
    dx, dy, _ = direction_to_vector(*motion.end) - direction_to_vector(*motion.start)
    if abs(dy) >= abs(dx):
        return "leftwards" if dy > 0 else "rightwards"
    return "forwards" if dx > 0 else "backwards"


def _vertical_words(motion: Motion) -> str:
    """ ", rising from ear level to high above", or where it sits: ", slightly above"."""
    if motion.horizontal == "overhead":
        return ""
    start, end = _elevation_place(motion.start[1]), _elevation_place(motion.end[1])
    if motion.vertical == "level":
        return f", {_elevation_place(motion.mean[1]).at}"
    verb = "rising" if motion.vertical == "rising" else "falling"
    return f", {verb}" if start == end else f", {verb} from {start.goal} to {end.goal}"


def _join(parts: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# --- Video context for the chat captioner ---------------------------------------------------------

_COLOURS = {
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
    "white": (255, 255, 255),
    "red": (200, 30, 30),
    "orange": (240, 140, 20),
    "yellow": (230, 220, 40),
    "green": (40, 160, 50),
    "cyan": (40, 200, 210),
    "blue": (30, 60, 200),
    "purple": (130, 40, 170),
    "brown": (120, 75, 35),
}
"""Named colours; every pixel takes the nearest name (RGB distance), each direction its commonest."""

MOTION_LEVEL = 6.0
"""Mean absolute frame-to-frame change (0-255) above which a direction counts as moving."""

SUMMARY_COLUMNS = 64
"""Columns the summary looks at (every k-th pixel): 8 per sector is plenty, and memory stays small."""


def describe_video(frames: np.ndarray, duration: float, fps: float) -> str:
    """A short text summary of an equirectangular video for the chat model, per azimuth sector.

    The paper fed the video itself to Gemini; an OpenAI-compatible text endpoint gets this instead:
    size and length, and per sector of the ear-level band (|elevation| ≤ 45°) the dominant named
    colour and whether that part of the picture moves.
    """
    height, width = frames.shape[1:3]
    step = -(-width // SUMMARY_COLUMNS)
    rows, columns = np.arange(0, height, step), np.arange(0, width, step)
    ear_level = rows[np.abs(row_elevation(rows, height)) <= 45.0]
    band = np.asarray(frames, dtype=np.float64)[:, ear_level][:, :, columns]  # (T, h, w, 3)
    palette = np.array(list(_COLOURS.values()), dtype=np.float64)  # (K, 3)
    names = np.argmin(((band[..., None, :] - palette) ** 2).sum(axis=-1), axis=-1)  # (T, h, w)
    change = np.abs(np.diff(band, axis=0)).mean(axis=(0, 1, 3)) if len(band) > 1 else np.zeros(len(columns))
    sector = np.array([direction_words(a) for a in column_azimuth(columns, width)])  # (w,)
    parts = []
    for name in SECTORS:
        inside = sector == name
        dominant = list(_COLOURS)[np.bincount(names[:, :, inside].ravel(), minlength=len(palette)).argmax()]
        moving = " (moving)" if change[inside].mean() > MOTION_LEVEL else ""
        parts.append(f"{name} {dominant}{moving}")
    return (
        f"{duration:.1f} s equirectangular video, {len(frames)} frames at {fps:g} fps, {width}x{height}; "
        f"ear-level colour by direction: {', '.join(parts)}"
    )


# --- Chat-model captioner (the paper's MLLM fusion step) ------------------------------------------

API_KEY_ENV = "SWANSPHERE_CAPTION_API_KEY"
"""Environment variable with the endpoint's API key (sent as a Bearer token), if it needs one."""

SYSTEM_PROMPT = (
    "You write spatial audio captions for 360-degree video clips. You get the per-second trajectory of "
    "the dominant sound source, measured from First-Order Ambisonics with acoustic intensity vectors, "
    "as JSON: azimuth in degrees (0 = front, +90 = left, -90 = right, 180 = behind), elevation in "
    "degrees (+90 = overhead), distance in metres (relative, from the level); the 'analysis' list adds "
    "proximity (0-1, 1 = closest) and diffuseness (0-1, 1 = no clear direction). Trust the trajectory "
    "for where the sound is and how it moves; use the class, the draft and the video summary for what "
    "it is. Describe the sound, its direction relative to the listener and its motion over time "
    "(approaching, receding, passing, moving left or right, circling, rising, falling). Answer with the "
    "caption only: one or two plain sentences, no preamble."
)


@dataclass(frozen=True)
class ChatCaptioner:
    """Captions from a chat model behind an OpenAI-compatible chat-completions endpoint.

    `base_url` is the server root (POST {base}/v1/chat/completions) or already ends in /v1
    (POST {base}/chat/completions). The request carries the trajectory JSON, the rule caption as a
    draft, and the video summary when there is one. Every failure is an InputError naming the URL.
    """

    name: ClassVar[str] = "chat"

    base_url: str
    """Server root, e.g. http://127.0.0.1:8000 or https://host/v1."""
    model: str
    """Model name the endpoint serves."""
    timeout_s: float = 60.0
    """Longest wait for the answer; a model writing a sentence needs seconds, not minutes."""
    api_key: str | None = None
    """Bearer token; None reads SWANSPHERE_CAPTION_API_KEY (no header when that is unset too)."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise InputError(f"LLM URL must start with http:// or https://, got {self.base_url!r}")
        if not self.model.strip():
            raise InputError("LLM model name is empty")
        if not self.timeout_s > 0:
            raise InputError(f"LLM timeout must be positive, got {self.timeout_s}")

    @property
    def url(self) -> str:
        base = self.base_url.rstrip("/")
        return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"

    def caption(self, scene: Scene, video: str | None = None) -> str:
        draft = RuleCaptioner().caption(scene)
        user = (
            f"Trajectory JSON:\n{scene.to_json()}\nRule-based draft caption: {draft}\n"
            f"Video: {video or 'none given'}\n"
        )
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}],
            "temperature": 0.0,
        }
        return _answer_text(self._post(body), self.url)

    def _post(self, body: dict[str, Any]) -> bytes:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        api_key = self.api_key if self.api_key is not None else os.environ.get(API_KEY_ENV)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            detail = _one_line(err.read().decode("utf-8", "replace"))[:200]
            raise InputError(f"{self.url}: HTTP {err.code} {err.reason}: {detail}") from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError):
                raise InputError(f"{self.url}: no answer within {self.timeout_s:g} s") from None
            reason = getattr(err.reason, "strerror", None) or err.reason
            raise InputError(f"{self.url}: cannot connect ({_one_line(reason)})") from None
        except TimeoutError:
            raise InputError(f"{self.url}: no answer within {self.timeout_s:g} s") from None
        except (OSError, HTTPException) as err:
            raise InputError(
                f"{self.url}: connection failed ({_one_line(err) or type(err).__name__})"
            ) from None


def _answer_text(raw: bytes, url: str) -> str:
    """The caption in an OpenAI-shaped answer: choices[0].message.content, on one line."""
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise InputError(f"{url}: malformed chat-completions response ({_one_line(err)})") from None
    if not isinstance(content, str) or not content.strip():
        raise InputError(f"{url}: malformed chat-completions response (no caption text)")
    return _one_line(content)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# --- The whole pipeline ---------------------------------------------------------------------------


def caption_file(
    wav_path: str | Path,
    video_path: str | Path | None = None,
    captioner: Captioner | None = None,
    label: str | None = None,
    segment_s: float = DEFAULT_SEGMENT_S,
) -> dict[str, Any]:
    """DoA → trajectory JSON → caption for one AmbiX file (App. A.2).

    Returns {"caption", "captioner", "trajectory": trajectory JSON with the caption inside,
    "segments": the DoA segments}. The video, if given, must be equirectangular and as long as the
    audio (within VIDEO_AUDIO_TOLERANCE_S); only the chat captioner looks at it.
    """
    captioner = captioner or RuleCaptioner()
    foa, sample_rate = read_foa(wav_path)
    foa = resample(foa, sample_rate, SAMPLE_RATE)  # (4, N)
    duration = foa.shape[1] / SAMPLE_RATE
    video = None
    if video_path is not None:
        frames, video_duration = read_video(video_path)
        if abs(video_duration - duration) > VIDEO_AUDIO_TOLERANCE_S:
            raise InputError(
                f"{video_path}: video lasts {video_duration:.2f} s but {wav_path} lasts {duration:.2f} s"
            )
        video = describe_video(frames, video_duration, VIDEO_FPS)
    segments = segment_doa(foa, sample_rate=SAMPLE_RATE, segment_s=segment_s)
    scene = trajectory_from_doa(segments, duration, SAMPLE_RATE, label or UNKNOWN_CLASS)
    scene.caption = captioner.caption(scene, video)
    return {
        "caption": scene.caption,
        "captioner": captioner.name,
        "trajectory": scene.model_dump(by_alias=True, mode="json"),
        "segments": [s.to_dict() for s in segments],
    }
