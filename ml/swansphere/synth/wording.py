"""Plain-English captions from a trajectory Scene: class + direction words + motion words.

Works on any Scene (ground truth here; the captioning pipeline can feed estimated trajectories):
the motion is read from the trajectory itself, not from how it was generated.
"""

import numpy as np

from swansphere.trajectory import Scene, Source

SUBJECTS = {
    "siren": ("a siren", "wails"),
    "bird": ("a bird", "chirps"),
    "dog": ("a dog", "barks"),
    "engine": ("an engine", "rumbles"),
    "speech": ("someone", "talks"),
    "bell": ("a bell", "rings"),
    "drum": ("a drum", "plays"),
    "water": ("water", "flows"),
    "piano": ("a piano", "plays"),
}
"""Class -> (subject, verb when it stays put); unknown classes read as 'a CLASS' that 'sounds'."""

# Sectors of 45° from the front, counter-clockwise; mirrored for the right side. Each sector in
# three forms: where a source is ("at"), a place it moves to ("place"), where it comes "from".
_SECTORS = (
    {"at": "in front", "place": "the front", "from": "from the front"},
    {"at": "to the front-{side}", "place": "the front-{side}", "from": "from the front-{side}"},
    {"at": "on the {side}", "place": "the {side}", "from": "from the {side}"},
    {"at": "to the back-{side}", "place": "the back-{side}", "from": "from the back-{side}"},
    {"at": "behind", "place": "the back", "from": "from behind"},
)

CIRCLE_DEG = 300.0
PAN_DEG = 30.0
DISTANCE_RATIO = 1.33
"""Motion thresholds: net azimuth turn for 'circles' and 'moves', distance ratio for 'approaches'."""


def direction_words(azimuth: float, elevation: float, form: str = "at") -> str:
    """Where a direction is: 'high up on the left' ("at"), 'the left' ("place"), 'from the left' ("from").

    Elevation words ('high up' above 30°, 'low down' below −30°) go into "at" and "from" only.
    """
    sector = min(int((abs(azimuth) + 22.5) // 45.0), 4)
    side = "left" if azimuth > 0 else "right"
    words = _SECTORS[sector][form].format(side=side)
    height = height_words(elevation)
    if form == "at" and height:
        return f"{height} {words}"
    if form == "from" and height:
        return f"from {height} {_SECTORS[sector]['at'].format(side=side)}"
    return words


def height_words(elevation: float) -> str:
    if elevation > 30.0:
        return "high up"
    if elevation < -30.0:
        return "low down"
    return ""


def motion_of(source: Source) -> str:
    """'static', 'pan', 'circle', 'approach' or 'recede', read from the trajectory."""
    turn = net_turn_deg(source)
    if abs(turn) >= CIRCLE_DEG:
        return "circle"
    if abs(turn) >= PAN_DEG:
        return "pan"
    first, last = source.trajectory[0].distance, source.trajectory[-1].distance
    if last * DISTANCE_RATIO <= first:
        return "approach"
    if first * DISTANCE_RATIO <= last:
        return "recede"
    return "static"


def net_turn_deg(source: Source) -> float:
    """Signed azimuth travelled from the first to the last point (shortest arc per step; + = ccw)."""
    azimuth = np.array([p.azimuth for p in source.trajectory])
    steps = np.mod(np.diff(azimuth) + 180.0, 360.0) - 180.0
    return float(np.sum(steps))


def describe(source: Source) -> str:
    """One clause, e.g. 'a siren circles the listener counter-clockwise, starting in front'."""
    subject, verb = SUBJECTS.get(source.sound_class, (f"a {source.sound_class}", "sounds"))
    start, end = source.trajectory[0], source.trajectory[-1]
    at_start = direction_words(start.azimuth, start.elevation)
    sense = "counter-clockwise" if net_turn_deg(source) > 0 else "clockwise"
    motion = motion_of(source)
    if motion == "circle":
        return f"{subject} circles the listener {sense}, starting {at_start}"
    if motion == "pan":
        origin = direction_words(start.azimuth, start.elevation, "place")
        target = direction_words(end.azimuth, end.elevation, "place")
        if origin == target:
            return f"{subject} moves {sense} {at_start}"
        mover = f"{subject} {height_words(start.elevation)}".rstrip()
        return f"{mover} moves {sense} from {origin} to {target}"
    if motion == "approach":
        return f"{subject} approaches {direction_words(start.azimuth, start.elevation, 'from')}"
    if motion == "recede":
        return f"{subject} moves away {direction_words(end.azimuth, end.elevation)}"
    return f"{subject} {verb} {at_start}"


def caption(scene: Scene) -> str:
    """One sentence for the whole scene; 'Silence.' when it has no sources."""
    clauses = [describe(source) for source in scene.sources]
    if not clauses:
        return "Silence."
    text = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return text[0].upper() + text[1:] + "."
