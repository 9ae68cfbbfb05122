"""``selfevo bench generate``, ``train``, ``serve`` and ``gpu``: speed measurements."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfevo.cli.common import stderr_for_libraries


def register(commands) -> None:
    bench = commands.add_parser("bench", help="measure speed")
    what = bench.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    _register_generate(what)
    _register_train_and_serve(what)
    _register_gpu(what)


def _register_generate(what) -> None:
    gen = what.add_parser(
        "generate",
        help="engine batching gain, static vs dynamic KV cache, pipeline scaling over 1 and 2 "
        "engines, vLLM vs HF and pool",
    )
    gen.add_argument("--json", action="store_true", help="print the report as JSON")
    gen.add_argument("--prompts", type=int, default=1024)
    gen.add_argument(
        "--max-new-tokens",
        type=int,
        default=32,
        help="new tokens a prompt (the KV-cache part always decodes 128)",
    )
    gen.add_argument("--batch-size", type=int, default=64)
    gen.add_argument("--engine-only", action="store_true", help="only the HF engine's parts")
    gen.add_argument("--no-vllm", action="store_true", help="skip the vLLM comparison")
    gen.set_defaults(func=cmd_bench_generate)


def _register_train_and_serve(what) -> None:
    train = what.add_parser(
        "train", help="training tokens/s (and MFU on GPU) through Ray Train + DeepSpeed"
    )
    train.add_argument("--json", action="store_true", help="print the report as JSON")
    train.add_argument("--zero-stage", type=int, default=2, choices=[0, 1, 2, 3])
    train.add_argument("--workers", type=int, default=2)
    train.add_argument("--hidden-size", type=int, default=256)
    train.add_argument("--num-layers", type=int, default=4)
    train.add_argument("--steps", type=int, default=12)
    train.add_argument("--gpu", action="store_true", help="one GPU per worker, bf16")
    train.add_argument("--peak-tflops", type=float, default=0.0, help="for MFU on GPU")
    train.set_defaults(func=cmd_bench_train)

    served = what.add_parser(
        "serve", help="selfevo serve's output tokens/s and latency against its pool's offline rate"
    )
    served.add_argument("--json", action="store_true", help="print the report as JSON")
    served.add_argument("--prompts", type=int, default=512)
    served.add_argument("--clients", type=int, default=32, help="concurrent clients")
    served.add_argument("--max-new-tokens", type=int, default=32)
    served.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    served.set_defaults(func=cmd_bench_serve)


def _register_gpu(what) -> None:
    gpu = what.add_parser(
        "gpu",
        help="engine, ZeRO training step (MFU), weight handoff and peak memory vs selfevo plan, "
        "on one device without Ray (tiny shapes on CPU)",
    )
    gpu.add_argument("--json", action="store_true", help="print the report as JSON")
    gpu.add_argument("--device", default="auto", help="auto (cuda if torch sees one), cpu, cuda:N")
    gpu.add_argument(
        "--peak-tflops", type=float, default=0.0, help="the device's dense bf16 peak, for MFU"
    )
    gpu.add_argument("--zero-stage", type=int, default=3, choices=[0, 1, 2, 3])
    gpu.add_argument("--gradient-checkpointing", action="store_true")
    gpu.add_argument("--batch-sizes", help="generation batch sizes, e.g. 1,16,64")
    gpu.add_argument("--train-seq-len", type=int, help="tokens per training sequence")
    gpu.add_argument("--micro-batch", type=int, help="sequences per training step")
    gpu.add_argument("--steps", type=int, help="training steps (the first is a warm-up)")
    gpu.add_argument("--out", help="also write the JSON report to this file")
    gpu.set_defaults(func=cmd_bench_gpu)


def cmd_bench_generate(args: argparse.Namespace) -> int:
    with stderr_for_libraries():
        from actors import bench

        report = bench.run(
            prompts=args.prompts,
            max_new_tokens=args.max_new_tokens,
            batch=args.batch_size,
            pipeline=not args.engine_only,
            vllm=not args.engine_only and not args.no_vllm,
        )
    print(json.dumps(report, indent=2) if args.json else bench.format_report(report))
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    with stderr_for_libraries():
        from actors import bench_train

        report = bench_train.run(
            zero_stage=args.zero_stage,
            workers=args.workers,
            hidden_size=args.hidden_size,
            num_layers=args.num_layers,
            steps=args.steps,
            use_gpu=args.gpu,
            peak_tflops=args.peak_tflops,
        )
    print(json.dumps(report, indent=2 if args.json else None))
    return 0


def cmd_bench_serve(args: argparse.Namespace) -> int:
    with stderr_for_libraries():
        from actors import bench_serve

        report = bench_serve.run(
            prompts=args.prompts,
            clients=args.clients,
            max_new_tokens=args.max_new_tokens,
            backend=args.backend,
        )
    print(json.dumps(report, indent=2 if args.json else None))
    return 0


def cmd_bench_gpu(args: argparse.Namespace) -> int:
    import dataclasses

    from selfevo.cli.common import progress

    with stderr_for_libraries():
        from actors import bench_gpu

        device = bench_gpu.resolve_device(args.device)
        shape = bench_gpu.GPU_DEFAULTS if device.startswith("cuda") else bench_gpu.CPU_DEFAULTS
        changes = {
            "batch_sizes": args.batch_sizes
            and tuple(int(size) for size in args.batch_sizes.split(",")),
            "train_seq_len": args.train_seq_len,
            "micro_batch": args.micro_batch,
            "train_steps": args.steps,
        }
        shape = dataclasses.replace(shape, **{k: v for k, v in changes.items() if v})
        report = bench_gpu.run(
            device,
            shape=shape,
            peak_tflops=args.peak_tflops,
            zero_stage=args.zero_stage,
            gradient_checkpointing=args.gradient_checkpointing,
            emit=progress,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else bench_gpu.format_report(report))
    return 0
