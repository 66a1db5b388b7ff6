"""Multi-objective online DPO (§3.4) as a job: rounds of sample -> score -> rank -> DPO steps.

Each round (`odpo.steps_per_round` optimizer steps) the current policy generates K candidates per
input clip; each candidate gets R = 0.4·spatial + 0.4·semantic + 0.2·fidelity (odpo.py); the ranking
gives preference pairs; the steps minimise the flow-matching DPO loss of odpo.flow_dpo_loss against
the frozen reference (the `init` checkpoint). With `odpo.kafka_bootstrap` every candidate and its
reward is published to the samples topic, and the round's pool is read back from it, so samples a
live service published for the same inputs join the ranking.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from swansphere import odpo, storage
from swansphere.datasets import Clip, ClipDataset, crop
from swansphere.engine import GenerationInput, GenerationSettings, generate_many
from swansphere.errors import InputError
from swansphere.feedback import RewardComponents, Sample, SampleConsumer, SampleProducer
from swansphere.models.locdit import flow_matching_noise
from swansphere.models.swansphere import SwanSphere
from swansphere.train.config import ODPOJobConfig, TrainConfig
from swansphere.train.trainer import Dist, Objective

log = logging.getLogger(__name__)


@dataclass
class PairBatch:
    """Winner and loser latents of the same inputs, with those inputs' conditions."""

    z_winner: Tensor  # (B, D, L) normalised
    z_loser: Tensor  # (B, D, L)
    frames: Tensor  # (B, T, 3, H, W)
    captions: list[str | None]


class ODPOObjective(Objective):
    def __init__(self, model: SwanSphere, reference: SwanSphere, config: ODPOJobConfig):
        super().__init__()
        self.model = model
        self.config = config
        model.train_generator_only()
        reference.requires_grad_(False).eval()
        # Kept out of the module tree: the frozen reference is neither trained, synced nor checkpointed.
        self.frozen = {"reference": reference.to(model.latent_mean.device)}
        self.round_stats: dict[str, float] = {}

    def forward(
        self, batch: PairBatch, generator: torch.Generator, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        device = generator.device
        model, reference = self.model, self.frozen["reference"]
        with torch.no_grad():
            video = model.svac.video_tokens(batch.frames.to(device), batch.z_winner.shape[-1])
            text, mask = model.text_encoder.encode(batch.captions)
        z_w, z_l = batch.z_winner.to(device), batch.z_loser.to(device)
        B = z_w.shape[0]
        sides = [model.patch_conditions(z, video, text, mask) for z in (z_w, z_l)]
        x0, t = flow_matching_noise(sides[0][0], generator)  # shared by winner, loser, policy, reference
        errors = _clip_errors(model, sides, x0, t, B)
        with torch.no_grad():
            ref_sides = [reference.patch_conditions(z, video, text, mask) for z in (z_w, z_l)]
            ref_errors = _clip_errors(reference, ref_sides, x0, t, B)
        loss, stats = odpo.flow_dpo_loss(errors[0], errors[1], ref_errors[0], ref_errors[1], self.config.beta)
        return loss, {"loss": loss.item(), **{f"dpo/{k}": v for k, v in stats.items()}, **self.round_stats}


def _clip_errors(
    model: SwanSphere, sides: list[tuple[Tensor, Tensor, Tensor]], x0: Tensor, t: Tensor, clips: int
) -> tuple[Tensor, Tensor]:
    """Winner and loser flow-matching errors per clip (B,), the mean over their patches."""
    (patches_w, h_w, context_w), (patches_l, h_l, context_l) = sides
    e_w, e_l = odpo.pair_flow_errors(
        model.locdit, patches_w, patches_l, (h_w, h_l), (context_w, context_l), x0, t
    )
    return e_w.view(clips, -1).mean(dim=1), e_l.view(clips, -1).mean(dim=1)


REWARDS = ("spatial", "semantic", "fidelity")


@dataclass
class Candidate:
    sample_id: str
    foa: np.ndarray  # (4, N)
    reward: float
    components: dict[str, float]


def odpo_batches(
    config: TrainConfig, dataset: ClipDataset, objective: Objective, dist: Dist
) -> Callable[[int, int], PairBatch]:
    """`batch_at(step, micro)` that runs a new online round whenever `step` enters one."""
    cfg = config.odpo
    model = objective.model
    weights = odpo.RewardWeights(
        spatial=cfg.spatial_weight, semantic=cfg.semantic_weight, fidelity=cfg.fidelity_weight
    )
    rewards = odpo.RewardModel.build(
        svac=model.svac, imagebind=cfg.imagebind, aesthetics=cfg.aesthetics, weights=weights
    )
    rounds: dict[int, list[tuple[Clip, Candidate, Candidate]]] = {}

    def run_round(index: int) -> list[tuple[Clip, Candidate, Candidate]]:
        seed = int(np.random.SeedSequence([config.seed, dist.rank, index]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randint(len(dataset), (cfg.inputs_per_round,), generator=generator).tolist()
        inputs = [crop(dataset[i], config.data.seconds, generator) for i in chosen]
        inputs = [_renamed(clip, f"{clip.name}.r{index}.i{k}") for k, clip in enumerate(inputs)]
        model.eval()
        pools: dict[str, list[Candidate]] = {}
        videos = [clip.pixels() for clip in inputs]
        # Every candidate of the round at once: concurrent streams batch in LocDiT and the decoder.
        generated = generate_many(
            model,
            [
                GenerationInput(
                    frames,
                    text=clip.caption or None,
                    settings=GenerationSettings(seed=(seed + 1000 * k + c) % 2**31, steps=cfg.sample_steps),
                )
                for k, (clip, frames) in enumerate(zip(inputs, videos, strict=True))
                for c in range(cfg.candidates)
            ],
        )
        for k, (clip, frames) in enumerate(zip(inputs, videos, strict=True)):
            reference = clip.foa.numpy()
            own = generated[k * cfg.candidates : (k + 1) * cfg.candidates]
            candidates = np.stack([foa[:, : reference.shape[-1]] for foa in own])
            scored = rewards.score(candidates, reference, frames, clip.caption or None)
            pools[clip.name] = [
                Candidate(
                    f"{clip.name}.c{c}",
                    candidates[c],
                    float(scored.total[c]),
                    {
                        "spatial": float(scored.spatial[c]),
                        "semantic": float(scored.semantic[c]),
                        "fidelity": float(scored.fidelity[c]),
                    },
                )
                for c in range(cfg.candidates)
            ]
        if cfg.kafka_bootstrap:
            store = cfg.kafka_audio_store or storage.join(config.out, "odpo_samples")
            pools = _through_kafka(cfg, store, pools, index, seed)
        model.train()
        pairs = []
        for clip in inputs:
            pool = pools.get(clip.name, [])
            if len(pool) >= 2:
                totals = torch.tensor([[c.reward for c in pool]])
                pairs += [
                    (clip, pool[p.winner], pool[p.loser])
                    for p in odpo.preference_pairs(totals, margin=cfg.pair_margin)
                ]
        everything = [c for pool in pools.values() for c in pool]
        objective.round_stats = {
            "odpo/round": float(index),
            "odpo/pairs": float(len(pairs)),
            "odpo/reward_mean": float(np.mean([c.reward for c in everything])),
            **{f"odpo/{n}_mean": float(np.mean([c.components[n] for c in everything])) for n in REWARDS},
        }
        log.info("ODPO round %d: %d pairs, %s", index, len(pairs), objective.round_stats)
        if not pairs:
            raise InputError(
                f"ODPO round {index}: every candidate is within odpo.pair_margin of its best; no preference "
                "pairs (lower the margin or raise odpo.candidates)"
            )
        return pairs

    def batch_at(step: int, micro: int) -> PairBatch:
        index = step // cfg.steps_per_round
        if index not in rounds:
            rounds.clear()
            rounds[index] = run_round(index)
        pairs = rounds[index]
        seed = np.random.SeedSequence([config.seed, dist.rank, step, micro]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(seed))
        chosen = torch.randint(len(pairs), (config.batch_size,), generator=generator).tolist()
        return _pair_batch(model, [pairs[i] for i in chosen])

    return batch_at


def _renamed(clip: Clip, name: str) -> Clip:
    return Clip(name=name, foa=clip.foa, frames=clip.frames, caption=clip.caption, trajectory=clip.trajectory)


@torch.no_grad()
def _pair_batch(model: SwanSphere, pairs: list[tuple[Clip, Candidate, Candidate]]) -> PairBatch:
    device = model.latent_mean.device
    P = model.config.patch_frames

    def latents(candidates: list[Candidate]) -> Tensor:
        audio = torch.from_numpy(np.stack([c.foa for c in candidates])).to(device)
        z = model.normalize_latents(model.vae.encode(model.vae.pad_to_hop(audio), sample=False))
        return z[..., : z.shape[-1] // P * P]

    return PairBatch(
        z_winner=latents([w for _, w, _ in pairs]),
        z_loser=latents([lo for _, _, lo in pairs]),
        frames=torch.stack([clip.frames for clip, _, _ in pairs]),
        captions=[clip.caption or None for clip, _, _ in pairs],
    )


def _through_kafka(
    cfg: ODPOJobConfig, audio_store: str, pools: dict[str, list[Candidate]], index: int, seed: int
) -> dict[str, list[Candidate]]:
    """Publish the round's candidates, then read the topic back: the round's pool is what it holds
    for these inputs, ours and any a live service published."""
    with SampleProducer(cfg.kafka_bootstrap, cfg.kafka_topic, audio_store=audio_store) as producer:
        for name, pool in pools.items():
            for candidate in pool:
                components = RewardComponents(**candidate.components, total=candidate.reward)
                producer.publish(
                    Sample.from_foa(
                        candidate.foa,
                        sample_id=candidate.sample_id,
                        input_id=name,
                        round=index,
                        seed=seed,
                        rewards=components,
                    )
                )
    with SampleConsumer(
        cfg.kafka_bootstrap, cfg.kafka_topic, group_id=f"odpo-{seed}-round-{index}"
    ) as consumer:
        received = consumer.poll(max_records=100_000, timeout_s=10.0)
        consumer.commit()
    merged: dict[str, dict[str, Candidate]] = {}
    for sample in received:
        if sample.input_id in pools:
            components = sample.rewards.model_dump(exclude={"total"})
            merged.setdefault(sample.input_id, {})[sample.sample_id] = Candidate(
                sample.sample_id, sample.foa(), sample.rewards.total, components
            )
    return {name: list(found.values()) for name, found in merged.items()}
