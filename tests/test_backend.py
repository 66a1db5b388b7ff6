"""The backend's stream states. The spatial LM's (`backend.LMStates`): streams at different patches
step in one batched call and each gets what it gets alone; lost, evicted and bad streams; the Triton
request layout that carries such a call (`triton_export.lm_request` / `lm_steps`). The video
encoder's (`backend.VideoEncoderStates`): new frames alone, lost states, the byte bound. The
decoder's windows (`backend.decoder_windows`)."""

import numpy as np
import pytest
import torch
from helpers_model import step_one, tiny_model

from swansphere.errors import InputError
from swansphere.models.vae import decoder_context_frames
from swansphere.models.video_encoder import VideoEncoderState
from swansphere.serving.backend import (
    FrameWindow,
    LMStateLostError,
    LMStep,
    TorchBackend,
    VideoEncoderStates,
    VideoStateLostError,
)
from swansphere.serving.triton_export import lm_request, lm_steps

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def sizes(model):
    c = model.config
    return c.patch_frames, c.vae.latent_dim, c.lm.video_dim


def streams(sizes, n: int = 3, patches: int = 6, seed: int = 0) -> list[dict]:
    """n streams' inputs: video tokens (None for the text-only last one), latents, text."""
    P, D, Dv = sizes
    rng = np.random.default_rng(seed)
    texts = ["rain on a tin roof", None, "a dog barks to the left"]
    return [
        {
            "video": None if i == n - 1 else rng.standard_normal((patches, P, Dv)).astype(np.float32),
            "latents": rng.standard_normal((patches, D, P)).astype(np.float32),
            "text": texts[i % len(texts)],
        }
        for i in range(n)
    ]


def step_of(name: str, stream: dict, t: int, n: int = 1) -> LMStep:
    """Patches t .. t + n - 1 of a stream."""
    video = None if stream["video"] is None else stream["video"][t : t + n]
    previous = stream["latents"][max(0, t - 1) : t + n - 1]
    return LMStep(name, t, video, previous, stream["text"])


def alone(model, stream: dict, patches: int) -> np.ndarray:
    """h of each patch, the stream stepped by itself, one patch a call."""
    backend = TorchBackend(model)
    return np.concatenate([backend.spatial_lm([step_of("a", stream, t)])[0] for t in range(patches)])


def test_streams_at_different_patches_step_together_as_they_step_alone(model, sizes):
    inputs = streams(sizes)
    expected = [alone(model, stream, 6) for stream in inputs]
    backend = TorchBackend(model)
    starts = [0, 2, 3]  # stream i joins at call starts[i]
    got: list[list[np.ndarray]] = [[] for _ in inputs]
    for call in range(3 + 6):
        names = [i for i in range(3) if 0 <= call - starts[i] < 6]
        results = backend.spatial_lm([step_of(f"s{i}", inputs[i], call - starts[i]) for i in names])
        for i, result in zip(names, results, strict=True):
            got[i].append(result)
    for i in range(3):
        assert np.max(np.abs(np.concatenate(got[i]) - expected[i])) <= TOLERANCE


def test_a_lost_stream_does_not_stop_the_others_and_replays_from_patch_zero(model, sizes):
    inputs = streams(sizes)
    expected = [alone(model, stream, 6) for stream in inputs]
    backend = TorchBackend(model)
    for t in range(3):
        backend.spatial_lm([step_of("s0", inputs[0], t), step_of("s1", inputs[1], t)])
    backend.end_stream("s1")
    results = backend.spatial_lm(
        [step_of("s0", inputs[0], 3), step_of("s1", inputs[1], 3), step_of("s2", inputs[2], 0, n=4)]
    )
    assert isinstance(results[1], LMStateLostError) and "no state" in str(results[1])
    assert np.max(np.abs(results[0] - expected[0][3:4])) <= TOLERANCE
    assert np.max(np.abs(results[2] - expected[2][:4])) <= TOLERANCE  # four patches in one call
    replayed = backend.spatial_lm([step_of("s1", inputs[1], 0, n=4)])[0]
    assert np.max(np.abs(replayed - expected[1][:4])) <= TOLERANCE
    wrong = backend.spatial_lm([step_of("s0", inputs[0], 2)])[0]
    assert isinstance(wrong, LMStateLostError) and "state at patch 4, asked for patch 2" in str(wrong)


def test_least_recently_used_streams_are_evicted_and_their_rows_reused(model, sizes):
    inputs = streams(sizes)
    backend = TorchBackend(model, lm_capacity=2)
    backend.spatial_lm([step_of("s0", inputs[0], 0)])
    backend.spatial_lm([step_of("s1", inputs[1], 0)])
    backend.spatial_lm([step_of("s0", inputs[0], 1)])  # s1 is now the least recently used
    backend.spatial_lm([step_of("s2", inputs[2], 0)])
    assert backend.lm_states._cache.rows == 2
    results = backend.spatial_lm([step_of("s0", inputs[0], 2), step_of("s1", inputs[1], 1)])
    assert isinstance(results[1], LMStateLostError)
    assert np.max(np.abs(results[0] - alone(model, inputs[0], 3)[2:])) <= TOLERANCE
    with pytest.raises(InputError, match="3 streams in one call, at most 2"):
        backend.spatial_lm([step_of(f"n{i}", inputs[0], 0) for i in range(3)])


def test_reset_forgets_every_stream_and_keeps_the_cache(model, sizes):
    """What keeps the LM's CUDA graphs valid across `reset` (they address the cache's tensors)."""
    inputs = streams(sizes)
    backend = TorchBackend(model)
    backend.spatial_lm([step_of(f"s{i}", inputs[i], 0) for i in range(3)])
    cache = backend.lm_states._cache
    backend.reset()
    assert isinstance(backend.spatial_lm([step_of("s0", inputs[0], 1)])[0], LMStateLostError)
    results = backend.spatial_lm([step_of("s2", inputs[2], 0, n=3), step_of("s0", inputs[0], 0, n=3)])
    assert backend.lm_states._cache is cache
    assert np.max(np.abs(results[0] - alone(model, inputs[2], 3))) <= TOLERANCE
    assert np.max(np.abs(results[1] - alone(model, inputs[0], 3))) <= TOLERANCE


def test_bad_input_fails_the_call_before_any_stream_moves(model, sizes):
    P, D, Dv = sizes
    inputs = streams(sizes)
    backend = TorchBackend(model)
    backend.spatial_lm([step_of("s0", inputs[0], 0)])
    short_video = LMStep("s1", 0, np.zeros((2, P, Dv), np.float32), np.zeros((0, D, P), np.float32))
    with pytest.raises(InputError, match="video must be \\(1, 4, 32\\) for stream s1's 1 patches"):
        backend.spatial_lm([step_of("s0", inputs[0], 1), short_video])
    with pytest.raises(InputError, match="named twice"):
        backend.spatial_lm([step_of("s0", inputs[0], 1), step_of("s0", inputs[0], 1)])
    with pytest.raises(InputError, match="previous latents must be"):
        backend.spatial_lm([LMStep("s3", 0, None, np.zeros((1, D), np.float32))])
    # s0 is still at patch 1
    h = step_one(backend, "s0", 1, inputs[0]["video"][1:2], inputs[0]["latents"][:1], inputs[0]["text"])
    assert np.max(np.abs(h - alone(model, inputs[0], 2)[1:])) <= TOLERANCE


def test_the_triton_request_carries_every_stream_and_comes_back_the_same(sizes):
    inputs = streams(sizes)
    steps = [step_of("s0", inputs[0], 3), step_of("s1", inputs[1], 0, n=3), step_of("s2", inputs[2], 1)]
    arrays = lm_request(steps)
    assert arrays["PREVIOUS_COUNT"].tolist() == [1, 2, 1]
    assert arrays["VIDEO"].shape[0] == 1 + 3  # the text-only stream sends none
    back = lm_steps(arrays)
    for before, after in zip(steps, back, strict=True):
        assert (after.stream_id, after.first_patch, after.text) == (
            before.stream_id,
            before.first_patch,
            before.text,
        )
        assert np.array_equal(after.previous, before.previous)
        assert (after.video is None and before.video is None) or np.array_equal(after.video, before.video)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("PREVIOUS_COUNT"), "missing input PREVIOUS_COUNT"),
        (lambda a: a.update(FIRST_PATCH=a["FIRST_PATCH"][:1]), "must have 2 entries"),
        (lambda a: a.update(PREVIOUS_COUNT=np.array([1, 5])), "does not split 2 rows"),
        (lambda a: a.update(VIDEO=a["VIDEO"][:1]), "VIDEO has 1 rows, the streams with video have 2"),
        (lambda a: a.update(TEXT=np.array([b"\xff", b""], dtype=np.object_)), "must be UTF-8"),
    ],
)
def test_a_malformed_triton_request_is_an_input_error(sizes, change, message):
    inputs = streams(sizes)
    arrays = lm_request([step_of("s0", inputs[0], 1), step_of("s1", inputs[1], 1)])
    change(arrays)
    with pytest.raises(InputError, match=message):
        lm_steps(arrays)


def streamed_clip(model, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """A random clip (1, T, 3, h, w) of one stream "v", its whole-clip tokens, and the video-encoder
    stage's windows of calls of 2, 3, 1, 6 and 4 new frames: (pixels, FrameWindow, first new frame),
    the new frames after up to the encoder's context."""
    video = model.config.svac.video
    context_frames = video.depth * (video.max_frames - 1)
    clip = np.random.default_rng(seed).integers(0, 256, (1, frames, 3, *video.frame_size), np.uint8)
    windows, done = [], 0
    for n in (2, 3, 1, 6, 4):
        first = max(0, done - context_frames)
        windows.append((clip[0, first : done + n], FrameWindow("v", first, done - first), done))
        done += n
    return clip, TorchBackend(model).video_encoder(clip)[0], windows


def test_the_video_encoder_goes_on_from_each_streams_state_or_encodes_the_whole_window(model):
    """`VideoEncoderStates`: a stream's next window costs only its new frames (its context pixels are
    not even read: zeros there change nothing), and a backend without the state (another worker)
    encodes the window whole; both give the tokens of the whole clip."""
    clip, whole, windows = streamed_clip(model, 16, seed=0)
    going_on = TorchBackend(model)
    for window, frame_window, done in windows:
        blank = window.copy()
        blank[: frame_window.context] = 0
        tokens = going_on.video_encoder(blank[None], [frame_window])[0]
        assert np.max(np.abs(tokens - whole[done : done + len(tokens)])) <= 1e-5
        other_worker = TorchBackend(model).video_encoder(window[None], [frame_window])[0]
        assert np.max(np.abs(other_worker - tokens)) <= 1e-5
        if frame_window.context:
            no_state = TorchBackend(model).video_encoder(blank[None], [frame_window])[0]
            assert np.max(np.abs(no_state - tokens)) > 1e-3, "without the state the context is read"
    two = clip[:, :3].repeat(2, axis=0)
    with pytest.raises(InputError, match="one context"):
        going_on.video_encoder(two, [FrameWindow("a", 0, 0), FrameWindow("b", 5, 2)])


def test_video_encoder_states_are_bounded_by_bytes_least_recently_used_first():
    """A paper-preset state is about 100 MB: the bound is bytes, not streams."""

    def state(frames: int) -> VideoEncoderState:
        return VideoEncoderState([(torch.zeros(1, 2, frames, 4, 8), torch.zeros(1, 2, frames, 4, 8))])

    assert state(3).nbytes == 2 * 2 * 3 * 4 * 8 * 4
    states = VideoEncoderStates(max_bytes=3 * state(1).nbytes)
    states.put("a", 1, state(1))
    states.put("b", 1, state(1))
    states.put("c", 2, state(2))  # 4 units: "a" goes, least recently used
    assert states.take("a", 1) is None and states.take("b", 1) is not None
    states.put("d", 1, state(1))  # "b" was taken: 3 units fit
    assert states.take("c", 2) is not None and states.take("d", 1) is not None
    states.put("e", 4, state(4))  # larger than the bound on its own: not kept
    assert states.take("e", 4) is None


def test_a_resumed_window_sends_new_frames_only_and_a_backend_without_the_state_says_so(model):
    """`FrameWindow.resume`: a stream's new frames alone go on from its state; where the backend has
    none (another worker, a restart), that row alone is a VideoStateLostError and the stage's
    fallback (the window with its context) gives the same tokens."""
    clip, whole, windows = streamed_clip(model, 18, seed=1)
    going_on = TorchBackend(model)
    for window, frame_window, done in windows:
        new = window[frame_window.context :]
        resumed = FrameWindow("v", done, resume=done > 0)
        tokens = going_on.video_encoder(new[None], [resumed])[0]
        assert np.max(np.abs(tokens - whole[done : done + len(new)])) <= 1e-5
        restarted = TorchBackend(model)
        if done:
            lost = restarted.video_encoder(new[None], [resumed])[0]
            assert isinstance(lost, VideoStateLostError) and f"no state at frame {done}" in str(lost)
        with_context = restarted.video_encoder(window[None], [frame_window])[0]
        assert np.max(np.abs(with_context - tokens)) <= 1e-5
    new = clip[:, 16:].repeat(2, axis=0)
    v, w = going_on.video_encoder(new, [FrameWindow("v", 16, resume=True), FrameWindow("w", 16, resume=True)])
    assert np.max(np.abs(v - whole[16:])) <= 1e-5 and isinstance(w, VideoStateLostError)
    with pytest.raises(InputError, match="resumed window"):
        going_on.video_encoder(new[:1], [FrameWindow("", 16, resume=True)])


def test_a_decoder_window_needs_a_patch_and_context_older_than_the_decoder_reads_is_dropped(model):
    """A window shorter than a patch is bad input, not a crash inside the decoder; a window longer
    than the decoder's receptive field plus the patch decodes as its last that-many frames do, so a
    caller cannot make one call decode an arbitrarily long window."""
    D, P = model.config.vae.latent_dim, model.config.patch_frames
    full = decoder_context_frames(model.config.vae) + P
    window = np.random.default_rng(3).standard_normal((1, D, full + 40)).astype(np.float32)
    assert np.array_equal(
        TorchBackend(model).vae_decoder(window), TorchBackend(model).vae_decoder(window[..., -full:])
    )
    for bad in (window[..., : P - 1], window[0], window[:, :-1]):
        with pytest.raises(InputError, match=f"windows must be \\(B, {D}, L >= {P}\\) latents"):
            TorchBackend(model).vae_decoder(bad)
