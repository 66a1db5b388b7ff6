"""`swansphere client`: stream a video to a running gateway and write the FOA as it arrives (DESIGN §5)."""

import argparse
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from itertools import islice
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf

from swansphere.cli.output import check_out_file, emit
from swansphere.cli.source import check_source
from swansphere.client import FRAMES_PER_MESSAGE, PCM16_SCALE, ProtocolError, SwanSphereClient
from swansphere.conventions import SAMPLE_RATE, VIDEO_FPS
from swansphere.errors import InputError
from swansphere.video import read_raw_frames, read_video

GATEWAY_ADDRESS_FILE = Path(".run/gateway.addr")
"""Where `make up` writes the gateway's HOST:PORT: the default target."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("client", help="generate through a running gateway (gRPC streaming)")
    parser.add_argument(
        "--target", help=f"gateway HOST:PORT (default: the address in {GATEWAY_ADDRESS_FILE})"
    )
    parser.add_argument(
        "--video",
        type=Path,
        help="equirectangular MP4, or - for a live source: raw RGB24 frames at 4 fps on stdin (--frame-size)",
    )
    parser.add_argument("--frame-size", help="WxH of the raw frames of --video - (W = 2 H)")
    parser.add_argument("--text", default="", help="caption (text condition)")
    parser.add_argument("--out", type=Path, required=True, help="output AmbiX WAV (W, Y, Z, X; SN3D)")
    parser.add_argument("--seconds", type=float, help="duration: text-only length, or cut the video to S s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20, help="flow-matching steps per patch")
    parser.add_argument("--h-guidance", type=float, help="guidance weight of h_t (default: the server's)")
    parser.add_argument(
        "--context-guidance", type=float, help="guidance weight of the context (default: the server's)"
    )
    parser.add_argument(
        "--realtime", action="store_true", help="send the frames one by one at 4 fps, as a live camera does"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="deadline of the whole call in seconds (default 600; none for --video -, a live camera)",
    )
    parser.add_argument("--retries", type=int, default=3, help="tries again while the gateway is unavailable")
    parser.add_argument(
        "--pcm16", action="store_true", help="receive 16-bit PCM (half the bytes); 16-bit WAV"
    )
    parser.add_argument("--tls", action="store_true", help="TLS with the system's root certificates")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate (PEM) of the gateway; implies --tls")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (PEM) for mutual TLS")
    parser.add_argument("--tls-key", type=Path, help="client key (PEM) for mutual TLS")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_source(args)
    check_out_file(args.out, "--out")
    if (args.h_guidance is None) != (args.context_guidance is None):
        raise InputError("give both --h-guidance and --context-guidance, or neither (server defaults)")
    target = args.target or _gateway_address()
    client = SwanSphereClient(  # checks the TLS files before the video is read; connects lazily
        target,
        timeout_s=_timeout(args),
        retries=args.retries,
        tls=args.tls,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=os.environ.get("SWANSPHERE_TOKEN") or None,
    )
    with client:
        frames = _frames(args)
        generation = client.generate(
            frames,
            text=args.text,
            seed=args.seed,
            steps=args.steps,
            guidance=None if args.h_guidance is None else (args.h_guidance, args.context_guidance),
            output_format="pcm16" if args.pcm16 else "float32",
            duration_s=None if args.video is not None else args.seconds,
            frames_per_message=1 if args.realtime else FRAMES_PER_MESSAGE,
            realtime=args.realtime,
        )
        start, first_chunk_s = time.perf_counter(), None
        args.out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with sf.SoundFile(str(args.out), "w", SAMPLE_RATE, 4, subtype=_subtype(args.pcm16)) as out:
                for chunk in generation:
                    first_chunk_s = first_chunk_s or time.perf_counter() - start
                    out.write(_samples(chunk.audio, args.pcm16))
        except (grpc.RpcError, ProtocolError, InputError) as err:  # InputError: a bad frame on stdin
            if first_chunk_s is None:
                args.out.unlink(missing_ok=True)
            if isinstance(err, InputError):
                raise
            return report_failure(err)
    assert generation.summary is not None  # Generation raises ProtocolError when it is missing
    summary = asdict(generation.summary)
    seconds = summary["samples"] / SAMPLE_RATE
    summary |= {
        "out": str(args.out),
        "target": target,
        "seconds": seconds,
        "sample_rate": SAMPLE_RATE,
        "channels": 4,
        "client_time_to_first_chunk_s": first_chunk_s or 0.0,
    }
    human = (
        f"wrote {args.out}: {seconds:.2f} s of 4-channel AmbiX at {SAMPLE_RATE} Hz ({summary['chunks']} "
        f"chunks, first chunk after {summary['time_to_first_chunk_s'] * 1e3:.0f} ms at the server, "
        f"{summary['client_time_to_first_chunk_s'] * 1e3:.0f} ms here, real-time factor "
        f"{summary['real_time_factor']:.2f}; model {summary['model']}, stream {summary['stream_id']})"
    )
    emit(summary, args.json, human)
    return 0


def _frames(args: argparse.Namespace) -> np.ndarray | Iterator[np.ndarray] | None:
    """The video file's frames, or the frames on stdin as they come (--video -); cut to --seconds."""
    if args.video is None:
        if args.frame_size is not None:
            raise InputError("--frame-size goes with --video - (raw frames on stdin)")
        return None
    frames_wanted = None if args.seconds is None else max(1, round(args.seconds * VIDEO_FPS))
    if str(args.video) != "-":
        if args.frame_size is not None:
            raise InputError("--frame-size is for raw frames on stdin (--video -); a video file has its own")
        frames, _ = read_video(args.video)
        return frames[:frames_wanted]
    if args.realtime:
        raise InputError("--realtime paces a video file; frames on stdin are sent as they come")
    if args.frame_size is None:
        raise InputError("--video - needs --frame-size WxH, the size of the raw frames on stdin")
    width, _, height = args.frame_size.partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise InputError(f"--frame-size must be WxH, e.g. 512x256, got {args.frame_size!r}")
    return islice(read_raw_frames(sys.stdin.buffer, int(width), int(height)), frames_wanted)


def _timeout(args: argparse.Namespace) -> float | None:
    """--timeout, else 600 s for a file or a text and no deadline for a live source."""
    if args.timeout is None and str(args.video) != "-":
        return 600.0
    return args.timeout


def _gateway_address() -> str:
    if not GATEWAY_ADDRESS_FILE.is_file():
        raise InputError(f"give --target HOST:PORT (or run `make up`, which writes {GATEWAY_ADDRESS_FILE})")
    return GATEWAY_ADDRESS_FILE.read_text().strip()


def _subtype(pcm16: bool) -> str:
    return "PCM_16" if pcm16 else "FLOAT"


def _samples(audio: np.ndarray, pcm16: bool) -> np.ndarray:
    """(n, 4) frames for the WAV. PCM16 audio goes back to the integers the gateway sent, written as they
    are: libsndfile's own float -> 16-bit scaling differs from the API's and would change some by one."""
    return np.round(audio.T * PCM16_SCALE).astype(np.int16) if pcm16 else audio.T


def report_failure(err: grpc.RpcError | ProtocolError, command: str = "client") -> int:
    """One line on stderr: exit 2 when the gateway refused our input, 1 for anything else (also for
    `swansphere bench --target`, which talks to the same gateway)."""
    if isinstance(err, grpc.RpcError):
        print(f"swansphere {command}: error: {err.code().name}: {err.details()}", file=sys.stderr)
        return 2 if err.code() is grpc.StatusCode.INVALID_ARGUMENT else 1
    print(f"swansphere {command}: error: {err}", file=sys.stderr)
    return 1
