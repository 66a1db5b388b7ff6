"""The loop every job shares: torchrun processes, DDP (FSDP2 for the paper-scale generator),
gradient accumulation, bf16 autocast on GPU, per-group gradient clipping, EMA, and checkpoints that
resume exactly (weights, optimizer, scheduler, RNG of every rank).

A job is an `Objective`: a module whose forward turns a batch into one scalar loss. Two-player
objectives (the VAE's discriminator) fold both players into that one scalar with stop-gradients,
so one backward and one optimizer with a parameter group per player serve every job.

Checkpoint layout under `config.out` (folder or s3:// prefix):
    step_0000100/model.safetensors     the SwanSphere checkpoint (EMA weights when EMA is on)
    step_0000100/trainer.safetensors   raw weights of the objective + optimizer state + metadata
    step_0000100/rng_rank{r}.safetensors
    latest                             name of the newest complete step folder
    final.safetensors                  the model after the last step
"""

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from swansphere import storage
from swansphere.checkpoint import save_checkpoint
from swansphere.datasets import Batch, ClipDataset, collate
from swansphere.models.swansphere import SwanSphere
from swansphere.train.config import TrainConfig
from swansphere.train.tracking import Tracker

log = logging.getLogger(__name__)
LATEST = "latest"


@dataclass(frozen=True)
class Dist:
    """This process's place in the torchrun world."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPU); a single process needs none."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed crop shapes: pick the fastest convolutions once
    if world_size > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(rank, world_size, local_rank, device)


def close_distributed() -> None:
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


class Objective(nn.Module):
    """A job's loss. Subclasses set `self.model` (the SwanSphere being trained) and implement
    `forward(batch, generator, step) -> (loss, stats)` and `param_groups()`."""

    model: SwanSphere

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups: {"name", "params", "lr_scale"}; only trainable parameters."""
        return [
            {"name": "model", "params": [p for p in self.parameters() if p.requires_grad], "lr_scale": 1.0}
        ]

    def ema_parameters(self) -> dict[str, Tensor]:
        """The weights an EMA follows, by their name in `self.model` (default: all trainable ones)."""
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}


class EMA:
    """θ_ema ← d·θ_ema + (1 − d)·θ after every optimizer step; what the checkpoint ships."""

    def __init__(self, parameters: dict[str, Tensor], decay: float):
        self.decay = decay
        self.parameters = parameters
        self.shadow = {name: p.detach().clone() for name, p in parameters.items()}

    @torch.no_grad()
    def update(self) -> None:
        for name, p in self.parameters.items():
            self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Swap the EMA weights in (to save or evaluate them) and back out."""
        saved = {name: p.detach().clone() for name, p in self.parameters.items()}
        with torch.no_grad():
            for name, p in self.parameters.items():
                p.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.parameters.items():
                    p.copy_(saved[name])


def seeded_batches(
    dataset: ClipDataset,
    batch_size: int,
    seconds: float,
    seed: int,
    rank: int,
    gain_db: tuple[float, float] | None = None,
) -> Callable[[int, int], Batch]:
    """`batch_at(step, micro)` for `Trainer.run`: clips drawn with replacement, cropped and, with
    `gain_db`, scaled by a uniform random gain, all by a generator seeded from (seed, rank, step,
    micro) alone."""

    def batch_at(step: int, micro: int) -> Batch:
        state = np.random.SeedSequence([seed, rank, step, micro]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        chosen = torch.randint(len(dataset), (batch_size,), generator=generator).tolist()
        batch = collate([dataset.random_window(i, seconds, generator) for i in chosen])
        if gain_db is not None:
            low, high = gain_db
            gains_db = low + (high - low) * torch.rand(batch_size, generator=generator)
            batch.foa = batch.foa * (10.0 ** (gains_db / 20.0))[:, None, None]
        return batch

    return batch_at


def lr_lambda(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to 10 % (the usual schedule for audio DiTs and VAEs)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class Trainer:
    """Runs `config.steps` optimizer steps of an objective over a batch stream, resumably."""

    def __init__(
        self,
        config: TrainConfig,
        objective: Objective,
        dist: Dist,
        tracker: Tracker,
    ):
        self.config = config
        self.dist = dist
        self.tracker = tracker
        self.objective = objective.to(dist.device)
        self.wrapped = self._wrap(self.objective)
        groups = [
            {"params": g["params"], "lr": config.lr * g["lr_scale"], "name": g["name"]}
            for g in self.objective.param_groups()
            if g["params"]
        ]
        self.optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay, betas=(0.9, 0.99))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(config.warmup_steps, config.steps)
        )
        self.ema = (
            EMA(self.objective.ema_parameters(), config.ema_decay) if config.ema_decay is not None else None
        )
        self.loss_generator = torch.Generator(dist.device).manual_seed(config.seed * 7919 + dist.rank)
        self.step = 0

    def _wrap(self, objective: Objective) -> nn.Module:
        if self.dist.world_size == 1:
            return objective
        strategy = self.config.strategy
        if strategy == "auto":
            generator_job = self.config.job in ("swansphere", "odpo")
            strategy = "fsdp" if self.config.preset == "paper" and generator_job else "ddp"
        if strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for block in (*objective.model.lm.blocks, *objective.model.locdit.blocks):
                fully_shard(block)
            return fully_shard(objective)
        device_ids = [self.dist.local_rank] if self.dist.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)

    def run(self, batch_at: Callable[[int, int], Any], prefetch: bool = False) -> None:
        """Train to `config.steps`; `batch_at(step, micro)` is this rank's micro-batch, a pure function
        of its arguments, so a resumed run sees exactly the batches an uninterrupted one would.
        With `prefetch`, a thread builds the next batch while this one trains (only for a `batch_at`
        that does not use the model). Call `resume()` first to continue a run."""
        with ThreadPoolExecutor(1, thread_name_prefix="batches") as pool:
            self._run(_prefetched(batch_at, pool, self.config.grad_accum) if prefetch else batch_at)

    def _run(self, batch_at: Callable[[int, int], Any]) -> None:
        cfg = self.config
        autocast = self.dist.device.type == "cuda" and cfg.bf16
        started = time.monotonic()
        deadline = started + cfg.max_seconds if cfg.max_seconds is not None else math.inf
        while self.step < cfg.steps:
            self.wrapped.train()
            stats: dict[str, float] = {}
            for micro in range(cfg.grad_accum):
                batch = batch_at(self.step, micro)
                sync = micro == cfg.grad_accum - 1
                no_sync = getattr(self.wrapped, "no_sync", None)
                context = no_sync() if (no_sync is not None and not sync) else contextlib.nullcontext()
                with context, torch.autocast(self.dist.device.type, torch.bfloat16, enabled=autocast):
                    loss, micro_stats = self.wrapped(batch, self.loss_generator, self.step)
                    (loss / cfg.grad_accum).backward()
                for key, value in micro_stats.items():
                    stats[key] = stats.get(key, 0.0) + value / cfg.grad_accum
            for group in self.optimizer.param_groups:
                norm = torch.nn.utils.clip_grad_norm_(group["params"], cfg.grad_clip)
                stats[f"grad_norm/{group['name']}"] = float(norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                stats["lr"] = self.scheduler.get_last_lr()[0]
                stats["seconds_per_step"] = (time.monotonic() - started) / cfg.log_every
                started = time.monotonic()
                self.tracker.log_metrics(stats, self.step)
                if self.dist.is_main:
                    log.info("step %d: %s", self.step, _fmt(stats))
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save()
            elif self._past(deadline):
                log.info("step %d: max_seconds %.0f reached, stopping", self.step, cfg.max_seconds)
                self.save()
                break

    def model_for_export(self) -> contextlib.AbstractContextManager[SwanSphere]:
        """The model with the weights to ship (EMA when on)."""
        return _yielding(self.objective.model, self.ema.applied() if self.ema else contextlib.nullcontext())

    def save(self) -> None:
        """Write step_XXXXXXX/ and then `latest`, so a crash mid-save leaves the previous step usable."""
        folder = storage.join(self.config.out, f"step_{self.step:07d}")
        rng = {
            "torch": torch.get_rng_state(),
            "loss_generator": self.loss_generator.get_state(),
        }
        storage.write_bytes(
            storage.join(folder, f"rng_rank{self.dist.rank}.safetensors"), save_safetensors(rng)
        )
        state = self.objective.state_dict()
        if self.dist.is_main:
            with self.model_for_export() as model:
                save_checkpoint(model, storage.join(folder, "model.safetensors"), {"step": str(self.step)})
            tensors, meta = _optimizer_tensors(self.optimizer)
            tensors.update({f"objective.{k}": v.detach().cpu().contiguous() for k, v in state.items()})
            if self.ema is not None:
                tensors.update({f"ema.{k}": v.cpu().contiguous() for k, v in self.ema.shadow.items()})
            metadata = {
                "step": str(self.step),
                "optimizer": json.dumps(meta),
                "scheduler": json.dumps(self.scheduler.state_dict()),
                "mlflow_run_id": self.tracker.run_id or "",
                "config": self.config.model_dump_json(),
            }
            storage.write_bytes(
                storage.join(folder, "trainer.safetensors"), save_safetensors(_dedup(tensors), metadata)
            )
        self._barrier()
        if self.dist.is_main:
            storage.write_bytes(storage.join(self.config.out, LATEST), f"step_{self.step:07d}\n".encode())
        self._barrier()

    def resume(self) -> None:
        """Continue from `out/latest` when it exists (same run, same MLflow run id)."""
        latest_uri = storage.join(self.config.out, LATEST)
        if not storage.exists(latest_uri):
            return
        folder = storage.join(self.config.out, storage.read_bytes(latest_uri).decode().strip())
        data = storage.read_bytes(storage.join(folder, "trainer.safetensors"))
        tensors = load_safetensors(data)
        metadata = safetensors_metadata(data)
        objective_state = {
            k.removeprefix("objective."): v for k, v in tensors.items() if k.startswith("objective.")
        }
        self.objective.load_state_dict(objective_state)
        _load_optimizer(self.optimizer, tensors, json.loads(metadata["optimizer"]))
        self.scheduler.load_state_dict(json.loads(metadata["scheduler"]))
        if self.ema is not None:
            self.ema.shadow = {
                k.removeprefix("ema."): v.to(self.dist.device)
                for k, v in tensors.items()
                if k.startswith("ema.")
            }
        rng_uri = storage.join(folder, f"rng_rank{self.dist.rank}.safetensors")
        rng = load_safetensors(storage.read_bytes(rng_uri))
        torch.set_rng_state(rng["torch"])
        self.loss_generator.set_state(rng["loss_generator"])
        self.step = int(metadata["step"])
        if self.dist.is_main:
            log.info("resumed from %s at step %d", folder, self.step)

    def _past(self, deadline: float) -> bool:
        """Whether any rank is past `deadline`: all ranks stop at the same step."""
        if deadline == math.inf:
            return False
        late = torch.tensor([float(time.monotonic() > deadline)], device=self.dist.device)
        if torch_dist.is_initialized():
            torch_dist.all_reduce(late, op=torch_dist.ReduceOp.MAX)
        return bool(late.item())

    def _barrier(self) -> None:
        if torch_dist.is_initialized():
            torch_dist.barrier()


def _prefetched(
    batch_at: Callable[[int, int], Any], pool: ThreadPoolExecutor, grad_accum: int
) -> Callable[[int, int], Any]:
    """`batch_at` that, when asked for one micro-batch, starts building the one after it."""
    pending: dict[tuple[int, int], Future] = {}

    def at(step: int, micro: int) -> Any:
        future = pending.pop((step, micro), None) or pool.submit(batch_at, step, micro)
        following = (step, micro + 1) if micro + 1 < grad_accum else (step + 1, 0)
        pending[following] = pool.submit(batch_at, *following)
        return future.result()

    return at


@contextlib.contextmanager
def _yielding(model: SwanSphere, context: contextlib.AbstractContextManager) -> Iterator[SwanSphere]:
    with context:
        yield model


def _fmt(stats: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in sorted(stats.items()))


def _dedup(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """safetensors refuses shared storage: give every entry its own copy."""
    return {k: v.clone() for k, v in tensors.items()}


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The string metadata in a safetensors file's header."""
    header_length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + header_length]).get("__metadata__") or {}


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer state as flat tensors (`optim.<param>.<key>`) and JSON for the rest: no pickle."""
    state = optimizer.state_dict()
    tensors = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, param_id, key = name.split(".", 2)
            state.setdefault(int(param_id), {})[key] = value
    for param_id, entries in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
