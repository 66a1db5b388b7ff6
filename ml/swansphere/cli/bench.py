"""`swansphere bench`: first-chunk latency, per-stage cost and real-time factor of streaming against
a full-sequence and a global-DiT baseline, measured in one run (issue 7; see `swansphere.bench`)."""

import argparse
import sys

from swansphere.bench import DEVICES, BenchSettings, run_bench, run_service_bench
from swansphere.cli.output import emit
from swansphere.models.swansphere import PRESETS

READY_TIMEOUT_S = 5.0
"""How long `--target` may take to accept a connection before the bench gives up, ahead of its
embedded half (seconds of model work that a missing gateway would waste)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="time to first chunk and real-time factor, with baselines")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="random-init model preset")
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--streams", type=int, default=1, help="concurrent streams of the concurrency run")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the synthetic clip")
    parser.add_argument("--steps", type=int, default=20, help="flow-matching steps per patch")
    parser.add_argument("--seed", type=int, default=0, help="weights, video and noise")
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: 1 for tiny on CPU, torch's default otherwise)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="repeats of each measurement: medians and means over them"
    )
    parser.add_argument(
        "--target", help="HOST:PORT of a running gateway: service mode against embedded (e.g. after make up)"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = BenchSettings(
        preset=args.preset,
        device=args.device,
        streams=args.streams,
        seconds=args.seconds,
        steps=args.steps,
        seed=args.seed,
        threads=args.threads,
        rounds=args.rounds,
    )
    if args.target is not None:
        return _service_bench(args, settings)
    report = run_bench(settings)
    emit(report, args.json, _human(report))
    return 0


def _service_bench(args: argparse.Namespace, settings: BenchSettings) -> int:
    """Service mode: the gateway must accept a connection first; a gRPC failure is one line, exit 1
    (2 when it refused our input), as `swansphere client` reports it."""
    import grpc  # only service mode speaks gRPC (see `run_service_bench`)

    from swansphere.cli.client import report_failure
    from swansphere.client import ProtocolError

    with grpc.insecure_channel(args.target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=READY_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            print(
                f"swansphere bench: error: UNAVAILABLE: no gateway accepted a connection at {args.target} "
                f"within {READY_TIMEOUT_S:g} s",
                file=sys.stderr,
            )
            return 1
    try:
        report = run_service_bench(args.target, settings)
    except (grpc.RpcError, ProtocolError) as err:
        return report_failure(err, "bench")
    emit(report, args.json, _human_service(report))
    return 0


def _human_service(report: dict) -> str:
    ms = 1e3
    service, embedded, concurrency = report["service"], report["embedded"], report["concurrency"]
    head = f"service mode via {report['target']}: {report['seconds']:.2f} s clip, {report['patches']} patches"
    first = service["time_to_first_chunk_s"] * ms, embedded["time_to_first_chunk_s"] * ms
    patch = service["per_patch_s"] * ms, embedded["per_patch_s"] * ms, report["added_per_patch_s"] * ms
    p50, p99 = concurrency["time_to_first_chunk_p50_s"] * ms, concurrency["time_to_first_chunk_p99_s"] * ms
    live = concurrency["live"]
    return "\n".join(
        [
            head,
            f"  first chunk {first[0]:.0f} ms (embedded {first[1]:.0f} ms), per patch {patch[0]:.1f} ms "
            f"(embedded {patch[1]:.1f} ms): {patch[2]:+.1f} ms added",
            f"  {concurrency['streams']} streams: first chunk p50 {p50:.0f} ms, p99 {p99:.0f} ms "
            f"({concurrency['p99_over_single']:.2f}x single), aggregate real-time factor "
            f"{concurrency['aggregate_real_time_factor']:.3f}",
            f"  {concurrency['streams']} live streams (frames at 4 fps): first chunk "
            f"p50 {live['time_to_first_chunk_p50_s'] * ms:.0f} ms, "
            f"p99 {live['time_to_first_chunk_p99_s'] * ms:.0f} ms "
            f"({live['p99_over_single']:.2f}x a single live stream's "
            f"{live['time_to_first_chunk_single_s'] * ms:.0f} ms)",
        ]
    )


def _human(report: dict) -> str:
    ms = 1e3
    stages = report["stages"]
    concurrency = report["concurrency"]
    machine = report["machine"]
    lines = [
        f"{report['preset']} preset on {report['device']} ({machine['device_name']}, "
        f"{machine['torch_threads']} torch threads of {machine['nproc']} cores), "
        f"{report['seconds']:.2f} s clip, {report['patches']} patches, {report['steps']} steps, "
        f"{report['rounds']} rounds",
        f"streaming: first chunk {report['time_to_first_chunk_s'] * ms:.1f} ms, "
        f"real-time factor {report['real_time_factor']:.3f}",
        _per_patch_line(stages),
        f"live (frames due at 4 fps): first chunk {report['live']['time_to_first_chunk_s'] * ms:.1f} ms",
        _per_patch_line(report["live"]["stages"]),
        f"full sequence: first chunk {report['full_sequence_time_to_first_chunk_s'] * ms:.0f} ms "
        f"({report['full_sequence_ratio']:.1f}x later)",
        f"global DiT ({report['params']['global_dit'] / 1e6:.2f} M params vs "
        f"{report['params']['generator'] / 1e6:.2f} M): first chunk "
        f"{report['global_dit_time_to_first_chunk_s'] * ms:.0f} ms ({report['global_dit_ratio']:.1f}x later)",
    ]
    if concurrency["streams"] > 1:
        lines.append(
            f"{concurrency['streams']} streams: first chunk p50 "
            f"{concurrency['time_to_first_chunk_p50_s'] * ms:.1f} ms, p99 "
            f"{concurrency['time_to_first_chunk_p99_s'] * ms:.1f} ms "
            f"({concurrency['p99_over_single']:.2f}x single), aggregate real-time factor "
            f"{concurrency['aggregate_real_time_factor']:.3f}"
        )
    return "\n".join(lines)


def _per_patch_line(stages: dict[str, float]) -> str:
    return "  per patch: " + ", ".join(
        f"{key.removesuffix('_s')} {value * 1e3:.1f} ms" for key, value in stages.items()
    )
