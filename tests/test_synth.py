"""SynthSphere content: classes, looks at the true direction, trajectories, room, mix, DoA accuracy."""

import itertools
import re

import numpy as np
import pytest

from swansphere import equirect
from swansphere.captioning import RuleCaptioner, analyse_motion, direction_words, elevation_words
from swansphere.conventions import SAMPLE_RATE, W, X, Y, Z, wrap_degrees
from swansphere.doa import segment_doa
from swansphere.metrics import trajectory_errors
from swansphere.synth import SynthConfig, generate_clip
from swansphere.synth.backdrop import backdrop
from swansphere.synth.looks import LOOKS, draw, pixel_directions
from swansphere.synth.render import render_audio
from swansphere.synth.room import Room, diffuse_ambience, reverberation
from swansphere.synth.scenes import MOTIONS, sample_sources
from swansphere.synth.sounds import SOUND_CLASSES, synthesize
from swansphere.trajectory import POINT_INTERVAL_S, Scene, Source, TrajectoryPoint, parse_scene

COLOUR_MATCH = 30.0
"""RGB distance within which a pixel counts as an object's colour."""


def _single(sound_class: str, motion: str, **overrides) -> SynthConfig:
    settings = {"seconds": 2.0, "width": 128, "max_sources": 1, "reverb": False, "ambience_db": None}
    settings |= overrides
    return SynthConfig(classes=(sound_class,), motions=(motion,), **settings)


def _colour_mask(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.linalg.norm(frame.astype(np.float64) - np.array(colour), axis=-1) < COLOUR_MATCH


def _column_centre(mask: np.ndarray) -> float:
    """Circular mean column of a mask (H, W): objects may straddle the ±180° seam."""
    width = mask.shape[1]
    angle = 2.0 * np.pi * (np.nonzero(mask)[1] + 0.5) / width
    return float(np.angle(np.exp(1j * angle).mean()) * width / (2.0 * np.pi) - 0.5) % width


def _column_error(a: float, b: float, width: int) -> float:
    return abs((a - b + width / 2) % width - width / 2)


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"seconds": 0.0},
        {"seconds": 1.1},
        {"width": 63},
        {"width": 16},
        {"max_sources": 0},
        {"max_sources": 10},
        {"rt60_s": 0.0},
        {"ambience_db": 5.0},
        {"classes": ("unicorn",)},
        {"motions": ("teleport",)},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        SynthConfig(**bad)


def test_presets():
    paper, tiny = SynthConfig.paper(), SynthConfig.tiny()
    assert (paper.seconds, paper.width, paper.height, paper.fps, paper.sample_rate) == (
        10.0,
        256,
        128,
        4,
        44100,
    )
    assert (paper.n_samples, paper.n_frames) == (441000, 40)
    assert tiny.seconds < paper.seconds and tiny.width < paper.width


# --- sound classes ----------------------------------------------------------------------------


def _band_profile(signal: np.ndarray) -> np.ndarray:
    """Log energy share of 16 log-spaced bands, 50 Hz - 16 kHz (an MFCC-like spectral envelope)."""
    power = np.abs(np.fft.rfft(signal)) ** 2
    freqs = np.fft.rfftfreq(len(signal), 1.0 / SAMPLE_RATE)
    edges = np.geomspace(50.0, 16000.0, 17)
    bands = np.array([power[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in itertools.pairwise(edges)])
    return np.log10(bands / bands.sum() + 1e-4)


def test_at_least_eight_classes_with_distinct_spectra():
    """Each class's spectral envelope, from unseen seeds, is nearest to its own class template."""
    assert len(SOUND_CLASSES) >= 8
    n = 2 * SAMPLE_RATE

    def profiles(seeds):
        return {
            c: [_band_profile(synthesize(c, np.random.default_rng(s), n, SAMPLE_RATE)) for s in seeds]
            for c in SOUND_CLASSES
        }

    templates = {c: np.mean(p, axis=0) for c, p in profiles(range(3)).items()}
    for sound_class, queries in profiles((100, 101)).items():
        for query in queries:
            nearest = min(templates, key=lambda c: np.linalg.norm(query - templates[c]))
            assert nearest == sound_class
    centroids = {c: np.sum(t * np.arange(16)) for c, t in templates.items()}
    assert len(set(np.round(list(centroids.values()), 3))) == len(SOUND_CLASSES)


def test_sounds_are_seeded_unit_rms_and_active_every_second():
    n = 3 * SAMPLE_RATE
    for sound_class in SOUND_CLASSES:
        a = synthesize(sound_class, np.random.default_rng(7), n, SAMPLE_RATE)
        b = synthesize(sound_class, np.random.default_rng(7), n, SAMPLE_RATE)
        c = synthesize(sound_class, np.random.default_rng(8), n, SAMPLE_RATE)
        assert np.array_equal(a, b) and not np.array_equal(a, c)
        assert np.sqrt(np.mean(a**2)) == pytest.approx(1.0)
        per_second = np.sqrt(np.mean(a.reshape(3, -1) ** 2, axis=1))
        assert per_second.min() > 0.1, f"{sound_class} is silent for a whole second"


# --- looks --------------------------------------------------------------------------------------


def test_looks_have_distinct_colours_absent_from_backdrops():
    assert set(LOOKS) == set(SOUND_CLASSES)
    colours = np.array([look.colour for look in LOOKS.values()], dtype=np.float64)
    pair_distances = [np.linalg.norm(a - b) for a, b in itertools.combinations(colours, 2)]
    assert min(pair_distances) > 2 * COLOUR_MATCH
    for seed in range(20):
        frame = backdrop(np.random.default_rng(seed), 128, 64).reshape(-1, 1, 3).astype(np.float64)
        nearest = np.linalg.norm(frame - colours[None], axis=-1).min()
        assert nearest > 2 * COLOUR_MATCH, f"backdrop {seed} has a class colour"


def test_backdrops_vary_and_favour_no_direction():
    """Seeded and varied; averaged over many clips, no azimuth stands out, only the horizon row does."""
    a = backdrop(np.random.default_rng(0), 128, 64)
    assert np.array_equal(a, backdrop(np.random.default_rng(0), 128, 64))
    assert not np.array_equal(a, backdrop(np.random.default_rng(1), 128, 64))
    frames = np.stack([backdrop(np.random.default_rng(seed), 128, 64) for seed in range(40)]).astype(float)
    mean_frame = frames.mean(axis=(0, 3))  # (H, W) brightness
    column_profile = mean_frame[:30].mean(axis=0)  # sky, per azimuth
    assert np.ptp(column_profile) < 0.1 * np.ptp(frames.mean(axis=3)[:, :30].mean(axis=1))
    assert np.abs(mean_frame[:30].mean() - mean_frame[34:].mean()) > 20.0, "sky and ground differ"


@pytest.mark.parametrize("sound_class", sorted(SOUND_CLASSES))
def test_objects_are_drawn_at_their_true_direction(sound_class):
    """Colour-matched pixels centre on the ground-truth column/row in every frame of a full circle."""
    config = _single(sound_class, "circle")
    clip = generate_clip(config, 0, seed=5)
    azimuth, elevation, _ = clip.scene.sources[0].at(np.arange(config.n_frames) / config.fps)
    for k, frame in enumerate(clip.frames):
        mask = _colour_mask(frame, LOOKS[sound_class].colour)
        assert mask.sum() >= 3
        true_column = equirect.azimuth_column(azimuth[k], config.width)
        assert _column_error(_column_centre(mask), true_column, config.width) < 1.5
        assert abs(np.nonzero(mask)[0].mean() - equirect.elevation_row(elevation[k], config.height)) < 2.0


def test_object_wraps_across_the_seam():
    width, height = 128, 64
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    look = LOOKS["drum"]
    draw(frame, pixel_directions(width, height), look, azimuth=178.0, elevation=0.0, radius_deg=10.0, t=0.0)
    mask = _colour_mask(frame, look.colour)
    columns = np.nonzero(mask)[1]
    assert columns.min() == 0 and columns.max() == width - 1, "the square shows on both image edges"
    assert _column_error(_column_centre(mask), equirect.azimuth_column(178.0, width), width) < 0.5


def test_objects_grow_as_they_approach():
    config = _single("siren", "approach", seconds=3.0)
    clip = generate_clip(config, 0, seed=2)
    areas = [_colour_mask(f, LOOKS["siren"].colour).sum() for f in clip.frames]
    _, _, distance = clip.scene.sources[0].at(np.array([0.0, config.seconds]))
    assert distance[0] / distance[-1] > 2.5
    assert areas[-1] > 4 * areas[0]


def test_objects_pulse_with_their_loudness():
    """A static drum looks bigger in frames where it is loud (size follows the sound)."""
    config = _single("drum", "static", seconds=4.0, width=256)
    clip = generate_clip(config, 0, seed=1)
    areas = np.array([_colour_mask(f, LOOKS["drum"].colour).sum() for f in clip.frames])
    loudness = np.sqrt(np.mean(clip.foa[W].reshape(config.n_frames, -1) ** 2, axis=1))
    assert np.corrcoef(areas, loudness)[0, 1] > 0.8


# --- scenes, trajectories, captions --------------------------------------------------------------


def test_trajectory_json_points_every_quarter_second():
    config = SynthConfig(seconds=2.5, width=64, max_sources=3)
    for index in range(4):
        clip = generate_clip(config, index, seed=11)
        scene = parse_scene(clip.scene.to_json())
        assert scene.duration == 2.5 and scene.sample_rate == SAMPLE_RATE
        assert 1 <= len(scene.sources) <= 3
        assert len({s.sound_class for s in scene.sources}) == len(scene.sources), "distinct classes"
        assert scene.caption and scene.caption == clip.scene.caption
        for source in scene.sources:
            times = [p.t for p in source.trajectory]
            assert times == pytest.approx(np.arange(11) * POINT_INTERVAL_S)


ANALYSED_AS = {
    "static": ({"static"}, "steady"),
    "pan": ({"pan_left", "pan_right"}, "steady"),
    "circle": ({"circle_left", "circle_right"}, "steady"),
    "approach": ({"static"}, "approaching"),
    "recede": ({"static"}, "receding"),
}
"""Sampled motion -> what `captioning.analyse_motion` must read off its trajectory: (horizontal, range)."""


def test_sampled_motions_are_what_the_trajectory_shows():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        for planned in sample_sources(rng, 10.0, 3, tuple(SOUND_CLASSES), MOTIONS):
            motion = analyse_motion(planned.source)
            horizontal, distance = ANALYSED_AS[planned.motion]
            assert motion.horizontal in horizontal, planned
            assert (motion.range, motion.vertical) == (distance, "level"), planned
            seen.add(planned.motion)
    assert seen == set(MOTIONS)


def _source(sound_class, azimuths, distances=None, elevation=0.0):
    distances = distances or [1.0] * len(azimuths)
    points = [
        TrajectoryPoint(t=i * POINT_INTERVAL_S, azimuth=a, elevation=elevation, distance=d)
        for i, (a, d) in enumerate(zip(azimuths, distances, strict=True))
    ]
    return Source(sound_class=sound_class, trajectory=points)


def test_captions_name_class_direction_and_motion():
    circle = _source("siren", list(np.arange(0, 361, 30.0)))
    assert RuleCaptioner().caption(Scene(duration=3.0, sources=[circle])) == (
        "A siren wails while circling the listener counter-clockwise, starting from the front, at ear level."
    )
    dog = _source("dog", [90.0, 90.0], elevation=35.0)
    car = _source("engine", [-170.0, -170.0], distances=[4.0, 1.0])
    assert RuleCaptioner().caption(Scene(duration=0.25, sources=[dog, car])) == (
        "A dog barks on the left, slightly above. An engine hums while approaching from behind, at ear level."
    )
    pan = _source("bird", [-60.0, -80.0, -100.0])
    assert RuleCaptioner().caption(Scene(duration=0.5, sources=[pan])) == (
        "A bird sings while moving from the front-right to the right, at ear level."
    )


SPOKEN = {
    "siren": "A siren wails",
    "bird": "A bird sings",
    "dog": "A dog barks",
    "engine": "An engine hums",
    "speech": "Someone talks",
    "bell": "A bell rings",
    "drum": "A drum beats",
    "water": "Water flows",
    "piano": "A piano plays",
}
"""How a caption sentence about each SynthSphere class begins."""

MOTION_WORDS = {
    "pan": "while moving from",
    "circle": "while circling the listener",
    "approach": "while approaching from",
    "recede": "while moving away",
}
"""Words a sentence about a moving source must hold; a static source's sentence has no "while"."""


def _names(place: str, sentence: str) -> bool:
    """Whether `place` is in the sentence as whole words ("left" is not in "front-left")."""
    return re.search(rf"(?<![\w-]){re.escape(place)}(?![\w-])", sentence) is not None


def test_clip_captions_come_from_the_captioning_rules_and_name_every_source():
    """One sentence per source, in order: its class, its motion, where it starts (and ends), its height."""
    assert set(SPOKEN) == set(SOUND_CLASSES)
    config = SynthConfig(seconds=2.0, width=32, max_sources=3, reverb=False, ambience_db=None)
    counts, motions = set(), set()
    for index in range(12):
        clip = generate_clip(config, index, seed=3)
        assert clip.scene.caption == RuleCaptioner().caption(clip.scene)
        sentences = re.split(r"(?<=\.) ", clip.scene.caption)
        assert len(sentences) == len(clip.scene.sources)
        for sentence, source, motion in zip(sentences, clip.scene.sources, clip.motions, strict=True):
            start, second, end = source.trajectory[0], source.trajectory[1], source.trajectory[-1]
            assert sentence.startswith(SPOKEN[source.sound_class] + " "), sentence
            assert _names(direction_words(start.azimuth), sentence), sentence
            assert sentence.endswith(f", {elevation_words(start.elevation)}."), sentence
            if motion == "static":
                assert " while " not in sentence, sentence
            else:
                assert MOTION_WORDS[motion] in sentence, sentence
            if motion == "pan":
                goal = direction_words(end.azimuth).replace("behind", "back")
                assert _names(f"to the {goal}", sentence), sentence
            if motion == "circle":
                sense = (
                    "counter-clockwise" if wrap_degrees(second.azimuth - start.azimuth) > 0 else "clockwise"
                )
                assert f"circling the listener {sense}," in sentence, sentence
        counts.add(len(sentences))
        motions.update(clip.motions)
    assert counts == {1, 2, 3} and motions == set(MOTIONS), "every source count and motion was checked"


# --- room, ambience, mix --------------------------------------------------------------------


def test_reverberation_decays_at_the_set_rt60_and_is_diffuse():
    """Schroeder backward integration of W's impulse response gives T30 close to the room's RT60."""
    room = Room(size=(8.0, 6.0, 3.5), listener=(4.0, 3.0, 1.6), rt60_s=0.5)
    impulse = np.zeros(SAMPLE_RATE)
    impulse[0] = 1.0
    source = _source("drum", [30.0, 30.0], distances=[2.0, 2.0])
    response = reverberation([impulse], [source], room, np.random.default_rng(0), SAMPLE_RATE)  # (4, N)
    schroeder = np.cumsum(response[W, ::-1] ** 2)[::-1]
    decay_db = 10.0 * np.log10(schroeder / schroeder[0])
    t5, t35 = np.argmax(decay_db < -5.0), np.argmax(decay_db < -35.0)
    t30 = 2.0 * (t35 - t5) / SAMPLE_RATE
    assert t30 == pytest.approx(0.5, rel=0.15)
    late = response[:, int(0.1 * SAMPLE_RATE) :]  # well after the early reflections
    directional_share = np.sum(late[[X, Y, Z]] ** 2) / np.sum(late[W] ** 2)
    assert directional_share == pytest.approx(1.0, abs=0.1), "isotropic field: X²+Y²+Z² ≈ W² (SN3D)"
    reverberant_energy = np.sum(response[W] ** 2)
    assert reverberant_energy == pytest.approx(16 * np.pi / room.room_constant, rel=0.5)


def test_ambience_is_diffuse_at_the_requested_level():
    ambience = diffuse_ambience(np.random.default_rng(0), 2 * SAMPLE_RATE, 0.05, SAMPLE_RATE)
    assert np.sqrt(np.mean(ambience[W] ** 2)) == pytest.approx(0.05)
    covariance = np.cov(ambience)
    assert np.diag(covariance)[1:] / covariance[0, 0] == pytest.approx([1 / 3] * 3, abs=0.05)
    correlation = covariance / np.sqrt(np.outer(np.diag(covariance), np.diag(covariance)))
    assert np.abs(correlation - np.eye(4)).max() < 0.1, "channels decorrelated"
    segments = segment_doa(ambience)
    assert min(s.diffuseness for s in segments) > 0.7


def test_mix_is_peak_limited_without_changing_channel_balance():
    config = SynthConfig(seconds=1.0, width=64, max_sources=2, reverb=False, ambience_db=None)
    planned = sample_sources(np.random.default_rng(0), 1.0, 2, config.classes, config.motions)
    dry = [
        synthesize(p.source.sound_class, np.random.default_rng(1), config.n_samples, SAMPLE_RATE) * 0.1
        for p in planned
    ]
    quiet = render_audio(config, planned, dry, np.random.default_rng(2), np.random.default_rng(3))
    loud = render_audio(
        config, planned, [d * 100.0 for d in dry], np.random.default_rng(2), np.random.default_rng(3)
    )
    assert np.abs(quiet).max() < 0.9, "quiet mixes are left as they are"
    assert np.abs(loud).max() == pytest.approx(0.9)
    np.testing.assert_allclose(loud / np.abs(loud).max(), quiet / np.abs(quiet).max(), atol=1e-9)


def test_clip_is_determined_by_seed_and_index():
    config = SynthConfig.tiny()
    a, b = generate_clip(config, 3, seed=9), generate_clip(config, 3, seed=9)
    assert np.array_equal(a.foa, b.foa) and np.array_equal(a.frames, b.frames) and a.scene == b.scene
    c = generate_clip(config, 4, seed=9)
    assert not np.array_equal(a.foa, c.foa)
    assert a.foa.dtype == np.float32 and a.foa.shape == (4, config.n_samples)
    assert a.frames.shape == (config.n_frames, config.height, config.width, 3)
    assert np.abs(a.foa).max() <= 0.9 + 1e-6


# --- acceptance: segment-protocol DoA against the ground truth ----------------------------------


def _doa_medians(reverb: bool) -> tuple[float, dict[str, float]]:
    """Per-motion medians and the pooled median (deg) of segment DoA errors on 10 s single-source clips."""
    errors: dict[str, list[float]] = {}
    for motion in MOTIONS:
        config = SynthConfig(seconds=10.0, width=32, max_sources=1, reverb=reverb, motions=(motion,))
        for index in range(2):
            clip = generate_clip(config, index, seed=21)
            result = trajectory_errors(segment_doa(clip.foa.astype(np.float64)), clip.scene.sources[0])
            errors.setdefault(motion, []).extend(result["angular_deg"])
    pooled = float(np.median(list(itertools.chain(*errors.values()))))
    return pooled, {motion: round(float(np.median(e)), 2) for motion, e in errors.items()}


def test_doa_matches_ground_truth_without_reverberation():
    pooled, per_motion = _doa_medians(reverb=False)
    print(f"segment DoA median error, no reverb, ambience -30 dB: {pooled:.2f}°, by motion {per_motion}")
    assert pooled < 3.0


def test_doa_matches_ground_truth_with_reverberation():
    pooled, per_motion = _doa_medians(reverb=True)
    print(f"segment DoA median error, RT60 0.4 s, ambience -30 dB: {pooled:.2f}°, by motion {per_motion}")
    assert pooled < 10.0
