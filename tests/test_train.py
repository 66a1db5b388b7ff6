"""Training jobs on the tiny preset: a few steps of each, a 2-process torchrun run that resumes,
exact resume, MLflow against a real tracking server with S3 artifacts, ODPO through a real broker."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from swansphere.checkpoint import load_checkpoint, save_checkpoint
from swansphere.datasets import synthsphere
from swansphere.feedback import SampleConsumer
from swansphere.models.swansphere import SwanSphere, preset
from swansphere.synth import SynthConfig, write_dataset
from swansphere.train.cli import main
from swansphere.train.trainer import safetensors_metadata, seeded_batches
from swansphere.train.vae_job import intensity_direction_loss

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("synthsphere")
    write_dataset(str(folder), SynthConfig(seconds=2.0, max_sources=1, width=128), clips=3, seed=5)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("init") / "tiny.safetensors"
    torch.manual_seed(0)
    save_checkpoint(SwanSphere(preset("tiny")), path)
    return str(path)


def write_config(folder: Path, **fields: object) -> str:
    path = folder / f"{fields['job']}.yaml"
    path.write_text(yaml.safe_dump(fields))
    return str(path)


def common(clips: str, out: Path, tracking: str, **extra: object) -> dict:
    return {
        "out": str(out),
        "data": {"manifest": clips, "seconds": 1.0, "cache": True},
        "batch_size": 2,
        "checkpoint_every": 1,
        "log_every": 1,
        "mlflow": {"tracking_uri": tracking, "experiment": "tests"},
        **extra,
    }


def latest(out: Path) -> str:
    return (out / "latest").read_text().strip()


def run_id(out: Path, step: str) -> str:
    return safetensors_metadata((out / step / "trainer.safetensors").read_bytes())["mlflow_run_id"]


def test_two_process_vae_job_runs_and_resumes_the_same_mlflow_run(clips, tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = write_config(
        tmp_path,
        job="vae",
        steps=2,
        vae={"discriminator_start": 1, "stft_fft_sizes": [512, 128], "doa_weight": 1.0},
        **common(clips, tmp_path / "vae", tracking),
    )
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc-per-node", "2"]
    command = [*torchrun, "-m", "swansphere.train.cli", "vae", "--config", config]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert latest(tmp_path / "vae") == "step_0000002"
    assert (tmp_path / "vae" / "step_0000002" / "rng_rank1.safetensors").exists()
    second = subprocess.run([*command, "steps=3"], capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stderr and "at step 2" in second.stderr
    assert latest(tmp_path / "vae") == "step_0000003"
    first_run = run_id(tmp_path / "vae", "step_0000002")
    assert first_run and run_id(tmp_path / "vae", "step_0000003") == first_run
    client = MlflowClient(tracking)
    history = client.get_metric_history(first_run, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert {"loss.discriminator", "loss.adversarial", "loss.feature_matching", "loss.doa"} <= set(
        client.get_run(first_run).data.metrics
    )
    assert load_checkpoint(tmp_path / "vae" / "final.safetensors").config.vae == preset("tiny").vae


def test_the_doa_loss_is_zero_for_the_same_direction_and_two_for_the_opposite_one():
    w = torch.randn(2, 1, 8192, generator=torch.Generator().manual_seed(0))
    x, y, z = torch.tensor([[0.6, 0.0, 0.8], [0.0, -1.0, 0.0]]).T[..., None, None]  # one direction per clip
    foa = torch.cat([w, w * y, w * z, w * x], dim=1)  # AmbiX W, Y, Z, X: a plane wave per clip
    flipped = foa * torch.tensor([1.0, -1.0, -1.0, -1.0])[:, None]
    assert intensity_direction_loss(0.3 * foa, foa).item() == pytest.approx(0.0, abs=1e-5)  # level-blind
    assert intensity_direction_loss(flipped, foa).item() == pytest.approx(2.0, abs=1e-5)
    swapped = foa.flip(0)  # each clip gets the other's direction, at right angles to its own
    assert intensity_direction_loss(swapped, foa).item() == pytest.approx(1.0, abs=1e-4)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(clips, tiny_checkpoint, tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fields = common(clips, tmp_path / "straight", tracking, checkpoint_every=2)
    config = write_config(tmp_path, job="swansphere", init=tiny_checkpoint, steps=4, ema_decay=0.9, **fields)
    assert main(["swansphere", "--config", config]) == 0
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "step_0000002").symlink_to(tmp_path / "straight" / "step_0000002")
    (resumed / "latest").write_text("step_0000002\n")
    assert main(["swansphere", "--config", config, f"out={resumed}"]) == 0
    straight = load_file(tmp_path / "straight" / "final.safetensors")
    again = load_file(resumed / "final.safetensors")
    assert straight.keys() == again.keys()
    assert all(torch.equal(straight[k], again[k]) for k in straight)
    stats = load_checkpoint(tmp_path / "straight" / "final.safetensors")
    assert not torch.allclose(stats.latent_std, torch.ones_like(stats.latent_std))


def test_a_time_budget_stops_the_job_with_a_final_checkpoint(clips, tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fields = common(clips, tmp_path / "vae", tracking, checkpoint_every=100)
    vae = {"deterministic_steps": 1, "adversarial_weight": 0, "feature_weight": 0, "stft_fft_sizes": [128]}
    config = write_config(tmp_path, job="vae", steps=50, max_seconds=0.001, vae=vae, **fields)
    assert main(["vae", "--config", config]) == 0
    assert latest(tmp_path / "vae") == "step_0000001"
    final = tmp_path / "vae" / "final.safetensors"
    assert safetensors_metadata(final.read_bytes())["steps"] == "1"
    spread = MlflowClient(tracking).get_metric_history(
        run_id(tmp_path / "vae", "step_0000001"), "posterior.clip_spread"
    )
    assert len(spread) == 1 and spread[0].value > 0


def test_vae_job_scores_its_reconstructions_on_held_out_clips(clips, tmp_path):
    """The VAE bounds every generator's accuracy: its job logs the reconstructions' DoA error next to
    the reference audio's own floor."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fields = common(clips, tmp_path / "vae", tracking)
    fields["data"] |= {"eval_manifest": clips, "eval_clips": 2}
    vae = {"adversarial_weight": 0, "feature_weight": 0, "stft_fft_sizes": [128]}
    config = write_config(tmp_path, job="vae", steps=1, vae=vae, **fields)
    assert main(["vae", "--config", config]) == 0
    client = MlflowClient(tracking)
    run = client.get_run(run_id(tmp_path / "vae", "step_0000001"))
    metrics = run.data.metrics
    assert metrics["eval.clips"] == 2
    for key in ("reference", "reconstruction"):  # the reference: the estimator's own floor
        assert 0 <= metrics[f"eval.{key}_segment_angular_deg_median"] <= 180
    assert "eval/heldout.json" in {a.path for a in client.list_artifacts(run.info.run_id, "eval")}


def test_svac_job_trains_the_heads_only_when_the_encoders_are_frozen(clips, tiny_checkpoint, tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fields = common(clips, tmp_path / "svac", tracking, batch_size=3)
    fields["data"]["seconds"] = 2.0
    config = write_config(tmp_path, job="svac", init=tiny_checkpoint, steps=2, **fields)
    assert main(["svac", "--config", config]) == 0
    before = load_checkpoint(tiny_checkpoint).state_dict()
    after = load_checkpoint(tmp_path / "svac" / "final.safetensors").state_dict()
    changed = {name.split(".")[1] for name in after if not torch.equal(after[name], before[name])}
    assert {"video_head", "audio_head"} <= changed
    assert not changed & {"video_encoder", "audio_encoder"}
    assert all(torch.equal(after[n], before[n]) for n in after if not n.startswith("svac."))


def test_generator_job_logs_to_a_real_mlflow_server_with_s3_artifacts_and_registers_the_model(
    clips, tiny_checkpoint, tmp_path, mlflow_server
):
    fields = common(clips, tmp_path / "gen", mlflow_server)
    fields["data"] |= {"eval_manifest": clips, "eval_clips": 1}
    fields["mlflow"] |= {"registered_model": "swansphere-test"}
    config = write_config(tmp_path, job="swansphere", init=tiny_checkpoint, steps=2, **fields)
    assert main(["swansphere", "--config", config]) == 0
    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id(tmp_path / "gen", "step_0000002"))
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert {"eval.video_segment_angular_deg_median", "eval.null_video_paper_delta_angular_rad"} <= set(
        run.data.metrics
    )
    artifacts = {
        a.path
        for folder in ("model", "samples", "eval")
        for a in client.list_artifacts(run.info.run_id, folder)
    }
    assert "model/final.safetensors" in artifacts and "eval/heldout.json" in artifacts
    assert {Path(a).suffix for a in artifacts if a.startswith("samples/")} == {".wav", ".png"}
    (version,) = client.search_model_versions("name='swansphere-test'")
    assert version.run_id == run.info.run_id
    downloaded = mlflow.artifacts.download_artifacts(
        f"runs:/{run.info.run_id}/model/final.safetensors",
        tracking_uri=mlflow_server,
        dst_path=str(tmp_path / "dl"),
    )
    assert (
        load_checkpoint(downloaded).config == load_checkpoint(tmp_path / "gen" / "final.safetensors").config
    )


def test_odpo_job_runs_a_round_through_the_kafka_topic(clips, tiny_checkpoint, tmp_path, kafka_broker):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    odpo = {
        "rounds": 1,
        "candidates": 4,
        "inputs_per_round": 2,
        "steps_per_round": 2,
        "sample_steps": 2,
        "pair_margin": 0.0,
        "kafka_bootstrap": kafka_broker,
        "kafka_topic": "odpo-test",
    }
    fields = common(clips, tmp_path / "odpo", tracking)
    config = write_config(tmp_path, job="odpo", init=tiny_checkpoint, steps=2, odpo=odpo, **fields)
    assert main(["odpo", "--config", config]) == 0
    with SampleConsumer(kafka_broker, "odpo-test", group_id="test-reader") as consumer:
        samples = consumer.poll(max_records=8, timeout_s=20.0)
    assert len(samples) == 8 and len({s.input_id for s in samples}) == 2
    assert all(0.0 <= s.rewards.total <= 1.0 for s in samples)
    metrics = MlflowClient(tracking).get_run(run_id(tmp_path / "odpo", "step_0000002")).data.metrics
    assert {"dpo.implicit_accuracy", "odpo.reward_mean", "odpo.pairs"} <= set(metrics)
    policy = load_checkpoint(tmp_path / "odpo" / "final.safetensors")
    reference = load_checkpoint(tiny_checkpoint)
    changed = [n for n, p in policy.state_dict().items() if not torch.equal(p, reference.state_dict()[n])]
    assert changed and all(n.split(".")[0] in ("lm", "locdit", "history") for n in changed)


def test_random_gain_scales_each_crop_by_a_seeded_factor(clips):
    dataset = synthsphere(clips, preset("tiny").svac.video.frame_size)
    plain = seeded_batches(dataset, 2, 1.0, seed=0, rank=0)(3, 0)
    louder = seeded_batches(dataset, 2, 1.0, seed=0, rank=0, gain_db=(6.0, 6.0))(3, 0)
    torch.testing.assert_close(louder.foa, plain.foa * 10 ** (6 / 20))
    varied = seeded_batches(dataset, 2, 1.0, seed=0, rank=0, gain_db=(0.0, 12.0))
    assert torch.equal(varied(3, 0).foa, varied(3, 0).foa)
    ratio = varied(3, 0).foa.abs().amax(dim=(1, 2)) / plain.foa.abs().amax(dim=(1, 2))
    assert ((ratio >= 1.0) & (ratio <= 10 ** (12 / 20) + 1e-5)).all() and ratio[0] != ratio[1]


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["vae", "--config", "/nonexistent.yaml"], "no such file"),
        (["vae", "--config", "{config}", "steps=zero"], "steps"),
        (["vae", "--config", "{config}", "nonsense"], "expected key=value"),
        (["svac", "--config", "{config}"], "not 'svac'"),
        (["vae", "--config", "{config}", "data.nonsense=1"], "nonsense"),
        (["vae", "--config", "{config}", "data.gain_db=[12, 0]"], "gain_db"),
    ],
)
def test_bad_job_input_exits_2_with_one_line(arguments, reason, tmp_path, capsys):
    config = write_config(tmp_path, job="vae", steps=1, out=str(tmp_path / "o"), data={"manifest": "x"})
    assert main([a.format(config=config) for a in arguments]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and reason in err, err


def test_swansphere_job_needs_a_trained_starting_point(tmp_path, capsys):
    config = write_config(
        tmp_path, job="swansphere", steps=1, out=str(tmp_path / "o"), data={"manifest": "x"}
    )
    assert main(["swansphere", "--config", config]) == 2
    assert "set init" in capsys.readouterr().err
