"""`swansphere-ml submit`: dry-run manifests valid against the Kubernetes 1.32 schemas, the Indexed Job wiring
torchrun needs, GPU requests only when asked, and one-line exit 2 for bad input and unreachable clusters."""

import copy

import kubernetes_validate
import pytest
import yaml

from swansphere.train.submit import main

K8S_VERSION = "1.32"
CONFIG_TEXT = "preset: tiny\nsteps: 20\ndata: s3://synthsphere/v1\n"


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "vae-tiny.yaml"
    path.write_text(CONFIG_TEXT)
    return path


def _dry_run(capsys, config_file, *extra) -> list[dict]:
    assert (
        main(["submit", "vae", "--config", str(config_file), "--name", "vae-run", "--dry-run", *extra]) == 0
    )
    return list(yaml.safe_load_all(capsys.readouterr().out))


def _by_kind(documents: list[dict]) -> dict[str, dict]:
    return {document["kind"]: document for document in documents}


def _validate_template(template: dict) -> None:
    """A PyTorchJob's schema is not in kubernetes-validate; its pod templates are core PodTemplateSpecs."""
    pod_template = {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "t"},
        "template": template,
    }
    kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_indexed_job_manifests_validate_and_wire_torchrun(capsys, config_file):
    documents = _dry_run(capsys, config_file, "--nodes", "3", "--set", "steps=40", "--namespace", "ml")
    assert [document["kind"] for document in documents] == ["ConfigMap", "Service", "Job"]
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
        assert document["metadata"]["namespace"] == "ml"
    config_map, service, job = (_by_kind(documents)[k] for k in ("ConfigMap", "Service", "Job"))
    assert config_map["data"] == {"vae-tiny.yaml": CONFIG_TEXT}

    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 3
    assert pod["restartPolicy"] == "Never"
    assert spec["podFailurePolicy"]["rules"]
    # Pod NAME-0 answers as NAME-0.SVC: the headless Service's name is the pods' subdomain and selects them.
    assert service["spec"]["clusterIP"] == "None"
    assert pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()

    container = pod["containers"][0]
    assert container["command"] == ["torchrun"]
    args = container["args"]
    assert "--node-rank=$(JOB_COMPLETION_INDEX)" in args
    assert "--nnodes=3" in args and "--nproc-per-node=1" in args
    assert f"--master-addr={job['metadata']['name']}-0.{service['metadata']['name']}" in args
    program = args[args.index("--no-python") + 1 :]
    assert program == ["swansphere-train", "vae", "--config", "/config/vae-tiny.yaml", "steps=40"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/config")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    secret_env = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e
    }
    assert secret_env == dict.fromkeys(
        ("S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), "swansphere-s3"
    )


def test_strict_validation_catches_a_broken_job(capsys, config_file):
    """The schema check has teeth: a wrong type and an unknown field are both refused."""
    job = _by_kind(_dry_run(capsys, config_file))["Job"]
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["completions"] = "1"
    unknown_field = copy.deepcopy(job)
    unknown_field["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    for broken in (wrong_type, unknown_field):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_gpus_only_when_asked(capsys, config_file):
    cpu_pod = _by_kind(_dry_run(capsys, config_file))["Job"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in yaml.safe_dump(cpu_pod)
    assert "tolerations" not in cpu_pod

    gpu_job = _by_kind(_dry_run(capsys, config_file, "--gpus-per-node", "4", "--nodes", "2"))["Job"]
    kubernetes_validate.validate(gpu_job, K8S_VERSION, strict=True)
    container = gpu_job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert "--nproc-per-node=4" in container["args"]  # one process per GPU unless told otherwise


def test_pytorchjob_manifests(capsys, config_file):
    documents = _dry_run(
        capsys, config_file, "--kind", "pytorchjob", "--nodes", "3", "--mlflow-uri", "http://mlflow:5000"
    )
    assert [document["kind"] for document in documents] == ["ConfigMap", "PyTorchJob"]
    kubernetes_validate.validate(documents[0], K8S_VERSION, strict=True)
    job = documents[1]
    assert job["apiVersion"] == "kubeflow.org/v1"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"]) == (1, 2)
    for replica in replicas.values():
        _validate_template(replica["template"])
        container = replica["template"]["spec"]["containers"][0]
        assert container["name"] == "pytorch"  # the operator finds its container and port by these names
        assert container["ports"][0]["name"] == "pytorchjob-port"
        assert "--nnodes=3" in container["args"]
        assert not any(arg.startswith(("--node-rank", "--master-addr")) for arg in container["args"])
        assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in container["env"]

    single = _dry_run(capsys, config_file, "--kind", "pytorchjob")[1]
    assert list(single["spec"]["pytorchReplicaSpecs"]) == ["Master"]


def test_dry_run_auto_is_indexed_job_and_escapes_dollars(capsys, config_file, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))  # dry-run must not look for a cluster
    documents = _dry_run(capsys, config_file, "--set", "tag=$(HOME)")
    assert [document["kind"] for document in documents] == ["ConfigMap", "Service", "Job"]
    assert "namespace" not in documents[2]["metadata"]
    # The kubelet expands $(VAR) in args; `$$` keeps the override literal.
    assert "tag=$$(HOME)" in documents[2]["spec"]["template"]["spec"]["containers"][0]["args"]


def test_no_kubeconfig_is_exit_2_one_line(capsys, config_file, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["submit", "vae", "--config", str(config_file)]) == 2
    assert "kubeconfig" in _one_error_line(capsys)


@pytest.mark.parametrize("kind", ["auto", "indexed-job"])
def test_unreachable_cluster_is_exit_2_one_line(
    capsys, config_file, monkeypatch, tmp_path, closed_port, kind
):
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{closed_port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert main(["submit", "svac", "--config", str(config_file), "--kind", kind]) == 2
    assert "cannot reach the Kubernetes API server" in _one_error_line(capsys)


def test_unknown_job_is_a_usage_error(capsys, config_file):
    with pytest.raises(SystemExit) as raised:
        main(["submit", "gan", "--config", str(config_file), "--dry-run"])
    assert raised.value.code == 2
    assert "invalid choice: 'gan'" in _one_error_line(capsys)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "{missing}"], "cannot read --config"),
        (["--config", "{list}"], "must hold a mapping"),
        (["--config", "{config}", "--name", "Vae_Run"], "--name"),
        (["--config", "{config}", "--set", "no-equals-sign"], "key=value"),
        (["--config", "{config}", "--nodes", "0"], "--nodes"),
        (["--config", "{config}", "--procs-per-node", "0"], "--procs-per-node"),
        (["--config", "{config}", "--memory", "lots"], "--memory"),
        (["--config", "{config}", "--gpus-per-node", "1", "--procs-per-node", "2"], "exceeds"),
    ],
)
def test_bad_input_is_exit_2_one_line(capsys, config_file, tmp_path, args, message):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    paths = {"config": config_file, "missing": tmp_path / "nope.yaml", "list": tmp_path / "list.yaml"}
    assert main(["submit", "vae", *(arg.format(**paths) for arg in args), "--dry-run"]) == 2
    assert message in _one_error_line(capsys)
