"""Spatial captioning (paper App. A.2): FOA of known trajectories → trajectory JSON → caption words,
and the chat captioner against a real OpenAI-compatible server on loopback."""

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from helpers_captioning import noise_bursts

from swansphere.captioning import (
    API_KEY_ENV,
    ChatCaptioner,
    RuleCaptioner,
    analyse_motion,
    describe_video,
    direction_words,
    elevation_words,
    trajectory_from_doa,
)
from swansphere.conventions import SAMPLE_RATE, wrap_degrees
from swansphere.doa import SegmentDoA, segment_doa
from swansphere.errors import InputError
from swansphere.foa import encode_source
from swansphere.trajectory import Scene, Source, parse_scene

# --- Known trajectories rendered to FOA -------------------------------------------------------------


def path(seconds: float, where: Callable[[float], tuple[float, float, float]]) -> list[dict]:
    """Trajectory points every 0.25 s from `where(t) -> (azimuth, elevation, distance)`."""
    points = []
    for t in np.arange(0.0, seconds + 1e-9, 0.25):
        az, el, dist = where(float(t))
        points.append({"t": float(t), "azimuth": float(wrap_degrees(az)), "elevation": el, "distance": dist})
    return points


def pass_by(t: float) -> tuple[float, float, float]:
    """A straight line from 8 m front-left (45°) to 8 m right (-90°) in 8 s; closest (3.1 m) at 4 s."""
    start, stop = np.array([8 * np.cos(np.pi / 4), 8 * np.sin(np.pi / 4)]), np.array([0.0, -8.0])
    x, y = start + (stop - start) * t / 8.0
    return float(np.degrees(np.arctan2(y, x))), 0.0, float(np.hypot(x, y))


@dataclass(frozen=True)
class Case:
    name: str
    seconds: float
    where: Callable[[float], tuple[float, float, float]]
    label: str
    motion: tuple[str, str, str]  # (horizontal, vertical, range)
    words: tuple[str, ...]  # must all be in the caption
    tolerance_deg: float  # on interior points; the ends carry the window-3 smoothing's half step


CASES = [
    Case("static_front_left", 6, lambda t: (45.0, 0.0, 2.0), "unknown", ("static", "level", "steady"),
         ("A sound stays to the front-left", "at ear level"), 2.0),
    Case("static_behind_above", 6, lambda t: (180.0, 20.0, 2.0), "dog", ("static", "level", "steady"),
         ("A dog barks behind the listener", "slightly above"), 2.0),
    Case("panning_right", 8, lambda t: (60.0 - 15.0 * t, 0.0, 2.0), "unknown",
         ("pan_right", "level", "steady"), ("moves from the front-left to the front-right",), 2.0),
    Case("circling_left", 11, lambda t: (36.0 * t, 0.0, 2.0), "dog", ("circle_left", "level", "steady"),
         ("A dog barks while circling the listener counter-clockwise",), 3.0),
    Case("circling_right", 11, lambda t: (90.0 - 36.0 * t, 0.0, 2.0), "unknown",
         ("circle_right", "level", "steady"), ("circles the listener clockwise",), 3.0),
    Case("approaching", 8, lambda t: (-90.0, 0.0, 8.0 - 7.0 * t / 8.0), "unknown",
         ("static", "level", "approaching"), ("approaches from the right",), 2.0),
    Case("receding", 8, lambda t: (90.0, 0.0, 1.0 + 5.0 * t / 8.0), "unknown",
         ("static", "level", "receding"), ("moves away on the left",), 2.0),
    Case("passing", 8, pass_by, "car", ("pan_right", "level", "passing"),
         ("A car approaches from the front-left and passes to the right",), 6.0),
    Case("rising", 8, lambda t: (0.0, 7.5 * t, 2.0), "unknown", ("static", "rising", "steady"),
         ("in front of the listener", "rising from ear level to high above"), 2.0),
]  # fmt: skip


def caption_case(case: Case, seed: int = 0) -> tuple[Scene, Source]:
    truth = Source.model_validate({"class": case.label, "trajectory": path(case.seconds, case.where)})
    foa = encode_source(noise_bursts(case.seconds, seed), truth)  # (4, N)
    segments = segment_doa(foa)
    scene = trajectory_from_doa(segments, case.seconds, SAMPLE_RATE, case.label)
    scene.caption = RuleCaptioner().caption(scene)
    return scene, truth


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_known_trajectories_give_valid_json_accurate_points_and_the_right_words(case: Case):
    scene, truth = caption_case(case)

    parsed = parse_scene(scene.to_json())
    source = parsed.sources[0]
    times = np.array([p.t for p in source.trajectory])
    assert np.allclose(times, np.arange(len(times)) + 0.5), "one point per 1 s segment, at its centre"
    assert source.sound_class == case.label
    assert [a["t"] for a in source.model_extra["analysis"]] == list(times)

    true_az, true_el, _ = truth.at(times)
    az = np.array([p.azimuth for p in source.trajectory])
    el = np.array([p.elevation for p in source.trajectory])
    az_error = np.abs(wrap_degrees(az - true_az))[1:-1]
    el_error = np.abs(el - true_el)[1:-1]
    print(
        f"{case.name}: azimuth error median {np.median(az_error):.2f} max {az_error.max():.2f} deg, "
        f"elevation max {el_error.max():.2f} deg; caption: {parsed.caption}"
    )
    assert az_error.max() <= case.tolerance_deg
    assert el_error.max() <= case.tolerance_deg

    motion = analyse_motion(source)
    assert (motion.horizontal, motion.vertical, motion.range) == case.motion
    for words in case.words:
        assert words in parsed.caption
    assert RuleCaptioner().caption(parsed) == parsed.caption, "deterministic"


def test_measured_distances_follow_the_inverse_square_law_of_an_approach():
    scene, truth = caption_case(CASES[[c.name for c in CASES].index("approaching")])
    points = scene.sources[0].trajectory
    measured = np.array([p.distance for p in points])
    _, _, true_dist = truth.at(np.array([p.t for p in points]))

    relative_error = np.abs(measured / measured[-1] - true_dist / true_dist[-1]) / (true_dist / true_dist[-1])
    print(
        f"approach: distance ratios {np.round(measured / measured[-1], 2)}, "
        f"max relative error {relative_error.max():.3f}"
    )
    assert np.all(np.diff(measured) < 0)
    assert relative_error.max() < 0.1
    proximity = [a["proximity"] for a in scene.sources[0].model_extra["analysis"]]
    assert proximity[-1] == pytest.approx(1.0, abs=0.01) and proximity[0] < 0.25


def test_another_seed_gives_the_same_words():
    case = CASES[[c.name for c in CASES].index("passing")]
    assert caption_case(case, seed=1)[0].caption == caption_case(case, seed=0)[0].caption


# --- Words and motion from hand-written trajectories ------------------------------------------------


@pytest.mark.parametrize(
    ("azimuth", "words"),
    [
        (0, "front"),
        (22, "front"),
        (23, "front-left"),
        (45, "front-left"),
        (90, "left"),
        (135, "back-left"),
        (180, "behind"),
        (-179, "behind"),
        (-135, "back-right"),
        (-90, "right"),
        (-45, "front-right"),
        (-23, "front-right"),
        (405, "front-left"),
    ],
)
def test_azimuth_sectors_count_counter_clockwise_with_positive_azimuth_on_the_left(azimuth, words):
    assert direction_words(azimuth) == words


@pytest.mark.parametrize(
    ("elevation", "words"),
    [
        (0, "at ear level"),
        (9, "at ear level"),
        (-9, "at ear level"),
        (20, "slightly above"),
        (50, "above"),
        (80, "overhead"),
        (-20, "slightly below"),
        (-50, "below"),
        (-80, "directly below"),
    ],
)
def test_elevation_words(elevation, words):
    assert elevation_words(elevation) == words


def scene_of(points: list[tuple[float, float, float]], label: str = "unknown") -> Scene:
    trajectory = [
        {"t": i + 0.5, "azimuth": a, "elevation": e, "distance": d} for i, (a, e, d) in enumerate(points)
    ]
    return Scene(
        duration=len(points), sources=[Source.model_validate({"class": label, "trajectory": trajectory})]
    )


def test_a_short_pan_within_one_sector_is_a_drift_named_from_the_listener():
    # Behind the listener, counter-clockwise (160° -> 200°) moves from their left to their right.
    scene = scene_of([(160, 0, 2), (170, 0, 2), (180, 0, 2), (190, 0, 2), (-160, 0, 2)])
    motion = analyse_motion(scene.sources[0])
    assert motion.horizontal == "pan_left" and motion.azimuth_travel == pytest.approx(40.0)
    assert (
        RuleCaptioner().caption(scene)
        == "A sound drifts rightwards, staying behind the listener, at ear level."
    )


def test_back_and_forth_overhead_falling_and_passing_close_by():
    sway = scene_of([(60, 0, 2), (120, 0, 2), (60, 0, 2), (0, 0, 2), (60, 0, 2)])
    assert analyse_motion(sway.sources[0]).horizontal == "sway"
    assert "moves back and forth to the front-left" in RuleCaptioner().caption(sway)

    overhead = scene_of([(10, 80, 2), (100, 85, 2), (-120, 82, 2)], label="helicopter")
    assert RuleCaptioner().caption(overhead) == "A helicopter stays overhead."

    falling = scene_of([(-90, 50, 2), (-90, 30, 2), (-90, 5, 2)], label="owl")
    assert (
        RuleCaptioner().caption(falling) == "An owl stays on the right, falling from high above to ear level."
    )

    close_by = scene_of([(90, 0, 6), (90, 0, 2), (90, 0, 1), (90, 0, 2), (90, 0, 6)], label="siren")
    assert analyse_motion(close_by.sources[0]).range == "passing"
    assert RuleCaptioner().caption(close_by) == (
        "A siren wails while approaching from the left, passing close by and receding, at ear level."
    )


def test_a_circle_above_the_listener_stays_a_circle():
    circle = scene_of([(a, 20.0, 2.0) for a in range(90, -300, -40)], label="bird")
    assert analyse_motion(circle.sources[0]).horizontal == "circle_right"
    assert RuleCaptioner().caption(circle) == (
        "A bird sings while circling the listener clockwise, starting from the left, slightly above."
    )


def test_several_sources_give_one_sentence_each_in_scene_order():
    dog = scene_of([(45, 0, 2), (46, 0, 2), (44, 0, 2)], label="dog").sources[0]
    voice = scene_of([(-90, 0, 6), (-90, 0, 3), (-90, 0, 1)], label="speech").sources[0]
    water = scene_of([(180, 20, 2)] * 3, label="water").sources[0]
    scene = Scene(duration=3.0, sources=[dog, voice, water])
    assert RuleCaptioner().caption(scene) == (
        "A dog barks to the front-left, at ear level. "
        "Someone talks while approaching from the right, at ear level. "
        "Water flows behind the listener, slightly above."
    )
    alone = [RuleCaptioner().caption(Scene(duration=3.0, sources=[s])) for s in scene.sources]
    assert RuleCaptioner().caption(scene) == " ".join(alone), "each sentence as if its source were alone"
    with pytest.raises(InputError, match="no source"):
        RuleCaptioner().caption(Scene(duration=3.0, sources=[]))


def test_silent_segments_are_left_out_and_an_all_silent_clip_is_refused():
    def segment(i: int, energy: float) -> SegmentDoA:
        return SegmentDoA(i, i + 1.0, 30.0, 0.0, energy, 0.1, 1.0, 0.9)

    scene = trajectory_from_doa([segment(0, 1e-2), segment(1, 1e-7), segment(2, 5e-3)], 3.0)
    assert [p.t for p in scene.sources[0].trajectory] == [0.5, 2.5]
    assert scene.sources[0].sound_class == "unknown"
    assert json.loads(scene.to_json())["sources"][0]["analysis"][1] == {
        "t": 2.5,
        "proximity": 0.9,
        "diffuseness": 0.1,
        "energy": 5e-3,
    }
    with pytest.raises(InputError, match="silent"):
        trajectory_from_doa([segment(0, 0.0), segment(1, 0.0)], 2.0)


def test_video_summary_names_the_colour_and_motion_of_each_direction():
    frames = np.full((8, 32, 64, 3), 128, dtype=np.uint8)  # (T, H, W, 3) grey
    # Columns 12..19 look at azimuth 90° ± 22.5° (left); a red block flickers in most of them.
    frames[::2, 8:24, 13:19] = (220, 20, 20)
    frames[1::2, 8:24, 13:19] = (150, 10, 10)
    summary = describe_video(frames, 2.0, 4)
    assert summary.startswith("2.0 s equirectangular video, 8 frames at 4 fps, 64x32")
    wide = describe_video(np.repeat(np.repeat(frames, 7, axis=1), 7, axis=2), 2.0, 4)  # 448x224
    assert wide.split(", ear")[1:] == summary.split(", ear")[1:], "the same picture at paper size"
    assert "left red (moving)" in summary
    assert "front grey," in summary and "front-left grey," in summary and "right grey," in summary


# --- Chat captioner against a real OpenAI-compatible server ------------------------------------------


STATIC_SCENE = scene_of([(45, 0, 2), (46, 0, 2), (44, 0, 2)], label="dog")


@pytest.mark.servers
@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_chat_captioner_sends_the_trajectory_and_uses_the_answer(chat_server, suffix, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "secret-token")
    captioner = ChatCaptioner(chat_server.base_url + suffix, "test-model", timeout_s=5)

    caption = captioner.caption(STATIC_SCENE, video="4.0 s equirectangular video")

    assert caption == "A dog at azimuth 45, 3 points."
    (request,) = chat_server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer secret-token"
    assert request["body"]["model"] == "test-model"
    system, user = request["body"]["messages"]
    assert "azimuth" in system["content"] and "+90 = left" in system["content"]
    sent = parse_scene(json.dumps(chat_server.trajectory_in(user["content"])))
    assert sent.sources[0].trajectory == STATIC_SCENE.sources[0].trajectory
    assert RuleCaptioner().caption(STATIC_SCENE) in user["content"]
    assert "Video: 4.0 s equirectangular video" in user["content"]


@pytest.mark.servers
def test_chat_captioner_sends_no_key_when_none_is_set(chat_server, monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    ChatCaptioner(chat_server.base_url, "test-model").caption(STATIC_SCENE)
    assert "Authorization" not in chat_server.requests[0]["headers"]
    assert "Video: none given" in chat_server.requests[0]["body"]["messages"][1]["content"]


@pytest.mark.servers
@pytest.mark.parametrize(
    ("model", "timeout_s", "message"),
    [
        ("broken", 5.0, "HTTP 500 Internal Server Error: .*model crashed"),
        ("garbled", 5.0, "malformed chat-completions response"),
        ("empty", 5.0, "malformed chat-completions response"),
        ("slow", 0.3, "no answer within 0.3 s"),
    ],
)
def test_chat_captioner_failures_are_one_line_input_errors_naming_the_url(
    chat_server, model, timeout_s, message
):
    captioner = ChatCaptioner(chat_server.base_url, model, timeout_s=timeout_s)
    with pytest.raises(InputError, match=message) as err:
        captioner.caption(STATIC_SCENE)
    assert str(err.value).startswith(f"{chat_server.base_url}/v1/chat/completions: ")
    assert "\n" not in str(err.value)


def test_chat_captioner_on_a_closed_port_or_a_bad_url_is_an_input_error(closed_port):
    with pytest.raises(InputError, match=rf"127.0.0.1:{closed_port}/v1/chat/completions: cannot connect"):
        ChatCaptioner(f"http://127.0.0.1:{closed_port}", "m", timeout_s=2).caption(STATIC_SCENE)
    with pytest.raises(InputError, match="must start with http"):
        ChatCaptioner("127.0.0.1:8000", "m")
    with pytest.raises(InputError, match="timeout must be positive"):
        ChatCaptioner("http://127.0.0.1:8000", "m", timeout_s=0)
