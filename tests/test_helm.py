"""The Helm chart, skaffold.yaml and the Dockerfiles (issue 6).

The chart is rendered by Helm's own engine (helm-python-sdk) with its defaults, with each skaffold
profile's values and with every optional part switched on; each rendered object must validate against
the Kubernetes 1.30 schemas and keep the security and operability rules below. skaffold's artifacts
and the Dockerfiles' entry points are checked against what the package really installs.
"""

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from swansphere.cli.serve import SERVICES
from swansphere.serving.tritonserver import STUB, pytriton_dir

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy/helm/swansphere"
DOCKER = ROOT / "deploy/docker"
KUBE_VERSION = "1.30"
RELEASE = NAMESPACE = "swansphere"
PROFILES = ("dev", "gpu", "ci")
CRDS = {"ServiceMonitor"}
"""Kinds from operators' CRDs: no schema in kubernetes-validate, checked by hand below."""

TRAINING = {
    "enabled": True,
    "job": "swansphere",
    "config": "job: swansphere\npreset: tiny\nsteps: 10\n",
    "nodes": 2,
    "procsPerNode": 1,
    "gpusPerNode": 1,
    "overrides": ["steps=20", "lr=$1e-4"],
}
EVERYTHING: dict[str, Any] = {
    "training": TRAINING,
    "odpo": {"enabled": True, "config": "job: odpo\npreset: tiny\n"},
    "synthsphere": {"enabled": True},
    "tls": {"enabled": True, "secretName": "swansphere-tls", "mutual": True},
    "metrics": {"serviceMonitor": {"alwaysRender": True}},
    "dev": {"redis": {"enabled": True}, "minio": {"enabled": True}},
    "s3": {"accessKey": "access", "secretKey": "secret"},
    "kafka": {"bootstrap": "kafka-0.kafka:9092,kafka-1.kafka:9092"},
    "mlflow": {"trackingUri": "http://mlflow:5000"},
    "gateway": {
        "autoscaling": {"enabled": True, "activeStreams": {"enabled": True}},
        "auth": {"existingSecret": "api-tokens"},
    },
    "stages": {
        "spatialLm": {"autoscaling": {"enabled": True, "queueDepth": {"enabled": True, "type": "Pods"}}}
    },
    "networkPolicy": {"gateway": {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}},
}
"""Every optional part of the chart switched on at once."""


def profile_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART.parent / f"values-{name}.yaml").read_text())


VARIANTS = {"default": {}, **{name: profile_values(name) for name in PROFILES}, "everything": EVERYTHING}


@pytest.fixture(scope="module")
def chart():
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm_python.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders for `values` (NOTES.txt aside)."""
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return [
        document
        for path, text in sorted(manifests.items())
        if not path.endswith("NOTES.txt")
        for document in yaml.load_all(text, Loader=yaml.CSafeLoader)
        if document
    ]


def of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def pod_specs(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod template (metadata + spec) of every workload, by "Kind/name"."""
    pods = {}
    for d in documents:
        if d["kind"] in ("Deployment", "Job"):
            pods[f"{d['kind']}/{d['metadata']['name']}"] = d["spec"]["template"]
        elif d["kind"] == "CronJob":
            pods[f"CronJob/{d['metadata']['name']}"] = d["spec"]["jobTemplate"]["spec"]["template"]
    return pods


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels + In/NotIn/Exists) selects `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, operator = labels.get(expression["key"]), expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
    return True


def service_deployments(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The gateway's and the stages' Deployments, by the service name they serve."""
    found = {}
    for deployment in of_kind(documents, "Deployment").values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        if container.get("command", [])[:2] == ["swansphere", "serve"]:
            found[container["command"][2]] = deployment
    return found


# --- Helm: render, lint, schema ---


@pytest.mark.parametrize("variant", VARIANTS)
def test_lint_is_clean(variant):
    report = helm_python.lint(CHART, VARIANTS[variant], strict=True, kube_version=f"v{KUBE_VERSION}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_validates_against_kubernetes_1_30(chart, variant):
    documents = render(chart, VARIANTS[variant])
    assert len(documents) > 20
    for document in documents:
        if document["kind"] in CRDS:
            continue
        try:
            kubernetes_validate.validate(document, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = ".".join(str(p) for p in err.path)
            pytest.fail(f"{document['kind']}/{document['metadata']['name']}: {where}: {err.message}")


def test_schema_rejects_bad_values(chart):
    bad_values = [
        {"logLevel": "LOUD"},
        {"gatway": {"replicas": 2}},
        {"gateway": {"replicas": 0}},
        {"stages": {"locdit": {"resources": {"limits": None}}}},
        {"stages": {"locdit": {"autoscaling": {"queueDepth": {"type": "Object"}}}}},
        {"triton": {"gpus": -1}},
        {"triton": {"shmSize": "lots"}},
        {"s3": {"endpoint": "minio:9000"}},
        {"modelRepository": {"prefix": "models with spaces"}},
        {"kafka": {"bootstrap": "kafka"}},
        {"training": {"job": "gan"}},
        {"training": {"name": "Training_Run"}},
        {"training": {"overrides": ["no-equals-sign"]}},
        {"gateway": {"pdb": {"maxUnavailble": 1}}},
    ]
    for values in bad_values:
        with pytest.raises(helm_python.HelmValuesError):
            chart.validate_schema(values)
    for values in VARIANTS.values():
        chart.validate_schema(values)


def test_missing_required_values_fail_with_a_message(chart):
    cases = [
        ({"training": {"enabled": True}}, "training.config"),
        ({"odpo": {"enabled": True}}, "odpo.config"),
        ({"tls": {"enabled": True}}, "tls.secretName"),
        ({"s3": {"existingSecret": ""}}, "s3.existingSecret"),
        ({"s3": {"accessKey": "a"}}, "s3.secretKey"),
    ]
    for values, message in cases:
        with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
            chart.render(values, name=RELEASE, namespace=NAMESPACE)


# --- Security and operability of every pod ---


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_is_locked_down_and_bounded(chart, variant):
    for name, pod in pod_specs(render(chart, VARIANTS[variant])).items():
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{where} {bound}"
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: /tmp must be an emptyDir"


@pytest.mark.parametrize("variant", VARIANTS)
def test_services_run_real_stages_with_grpc_health_probes(chart, variant):
    values = VARIANTS[variant]
    tls = values.get("tls", {}).get("enabled", False)
    mutual = tls and values["tls"].get("mutual", False)
    deployments = service_deployments(render(chart, values))
    assert sorted(deployments) == sorted(SERVICES)
    for service, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert set(ports) == {"grpc", "metrics"}, service
        env = env_of(container)
        assert env["SWANSPHERE_PORT"] == str(ports["grpc"]), service
        assert env["SWANSPHERE_METRICS_PORT"] == str(ports["metrics"]), service
        assert env["SWANSPHERE_HOST"] == "0.0.0.0", service
        readiness = container["readinessProbe"]
        if mutual or (tls and service == "gateway"):
            command = readiness["exec"]["command"]
            assert command[0] == "grpc_health_probe" and "-tls" in command, service
            assert f"-addr=127.0.0.1:{ports['grpc']}" in command, service
            assert "-tls-client-cert=/etc/swansphere/tls/tls.crt" in command, service
            assert env["SWANSPHERE_TLS_CA"] == "/etc/swansphere/tls/ca.crt", service
            assert env["SWANSPHERE_TLS_CERT"] == "/etc/swansphere/tls/tls.crt", service
            # Mutual TLS on every hop: the stages also reach Triton over it.
            assert env.get("SWANSPHERE_TRITON_TLS") == (None if service == "gateway" else "true"), service
        else:
            assert readiness["grpc"]["port"] == ports["grpc"], service
            assert not any(name.startswith("SWANSPHERE_TLS_") for name in env), service
        for probe in ("livenessProbe", "startupProbe"):
            assert container[probe]["tcpSocket"]["port"] == "grpc", f"{service} {probe}"
        grace = float(env["SWANSPHERE_SHUTDOWN_GRACE_S"])
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace, service


def test_mutual_tls_reaches_triton(chart):
    """With tls.mutual, Triton serves gRPC over mutual TLS with the release's Secret."""
    documents = render(chart, VARIANTS["everything"])
    spec = of_kind(documents, "Deployment")[f"{RELEASE}-triton"]["spec"]["template"]["spec"]
    args = spec["containers"][0]["args"]
    assert {
        "--grpc-use-ssl=true",
        "--grpc-use-ssl-mutual=true",
        "--grpc-root-cert=/etc/swansphere/tls/ca.crt",
    } <= set(args)
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["tls"] == "/etc/swansphere/tls"
    assert {v["name"]: v for v in spec["volumes"]}["tls"]["secret"]["secretName"] == "swansphere-tls"
    plain = of_kind(render(chart, {}), "Deployment")[f"{RELEASE}-triton"]["spec"]["template"]["spec"]
    assert not any(arg.startswith("--grpc-use-ssl") for arg in plain["containers"][0]["args"])


def test_grpc_ports_are_labelled_cleartext_http2_only_where_they_are(chart):
    """`kubernetes.io/h2c` tells meshes and L7 balancers to speak cleartext HTTP/2 to the port."""

    def protocols(values: dict[str, Any]) -> dict[str, str | None]:
        services = of_kind(render(chart, values), "Service")
        return {
            name: next(p.get("appProtocol") for p in s["spec"]["ports"] if p["name"] == "grpc")
            for name, s in services.items()
            if any(p["name"] == "grpc" for p in s["spec"]["ports"])
        }

    assert set(protocols({}).values()) == {"kubernetes.io/h2c"}
    gateway_tls = protocols({"tls": {"enabled": True, "secretName": "swansphere-tls"}})
    assert gateway_tls.pop(f"{RELEASE}-gateway") is None and set(gateway_tls.values()) == {
        "kubernetes.io/h2c"
    }
    assert set(protocols(VARIANTS["everything"]).values()) == {None}


def test_a_pod_disruption_budget_takes_min_available_instead_of_the_default(chart):
    documents = render(chart, {"gateway": {"pdb": {"minAvailable": "50%"}}})
    budgets = of_kind(documents, "PodDisruptionBudget")
    assert budgets[f"{RELEASE}-gateway"]["spec"] == {
        "minAvailable": "50%",
        "selector": budgets[f"{RELEASE}-gateway"]["spec"]["selector"],
    }
    assert budgets[f"{RELEASE}-triton"]["spec"]["maxUnavailable"] == 1
    for document in documents:
        kubernetes_validate.validate(document, KUBE_VERSION, strict=True)


def test_gateway_and_stages_reach_real_services(chart):
    documents = render(chart, {})
    services = of_kind(documents, "Service")
    deployments = service_deployments(documents)
    gateway_env = env_of(deployments["gateway"]["spec"]["template"]["spec"]["containers"][0])
    targets = gateway_env["SWANSPHERE_STAGE_TARGETS"].split(",")
    assert len(targets) == 4
    for target in targets:
        host, port = target.split(":")
        assert int(port) in [p["port"] for p in services[host]["spec"]["ports"] if p["name"] == "grpc"]
        assert selects({"matchLabels": services[host]["spec"]["selector"]}, pod_labels(deployments, host))
    for service, deployment in deployments.items():
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        host, port = env["SWANSPHERE_TRITON_URL"].split(":")
        assert {"name": "grpc", "port": int(port)}.items() <= services[host]["spec"]["ports"][0].items()
        assert env["SWANSPHERE_MODEL_REPOSITORY"] == "s3://models/swansphere/current", service
        assert env["SWANSPHERE_REDIS_URL"] == "redis://redis-master:6379/0", service


def test_gateway_reads_its_bearer_tokens_from_a_secret_when_given_one(chart):
    """The gateway authenticates against a mounted Secret (services/common/auth.py), or not at all."""
    plain = service_deployments(render(chart, {}))["gateway"]["spec"]["template"]["spec"]
    assert "SWANSPHERE_AUTH_TOKENS_FILE" not in env_of(plain["containers"][0])
    deployments = service_deployments(render(chart, {"gateway": {"auth": {"existingSecret": "api-tokens"}}}))
    pod = deployments["gateway"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "auth")
    path = env_of(container)["SWANSPHERE_AUTH_TOKENS_FILE"]
    (item,) = next(v for v in pod["volumes"] if v["name"] == "auth")["secret"]["items"]
    assert path == f"{mount['mountPath']}/{item['path']}" and mount["readOnly"]
    assert next(v for v in pod["volumes"] if v["name"] == "auth")["secret"]["secretName"] == "api-tokens"
    for name, deployment in deployments.items():
        if name != "gateway":
            assert "SWANSPHERE_AUTH_TOKENS_FILE" not in env_of(
                deployment["spec"]["template"]["spec"]["containers"][0]
            )


def pod_labels(deployments: dict[str, dict[str, Any]], service_name: str) -> dict[str, str]:
    """Pod labels of the Deployment named like the Service."""
    for deployment in deployments.values():
        if deployment["metadata"]["name"] == service_name:
            return deployment["spec"]["template"]["metadata"]["labels"]
    raise AssertionError(f"no Deployment behind Service {service_name}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_deployment_has_a_pod_disruption_budget(chart, variant):
    documents = render(chart, VARIANTS[variant])
    budgets = of_kind(documents, "PodDisruptionBudget").values()
    for name, deployment in of_kind(documents, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        assert len(matching) == 1, f"{name}: {len(matching)} PodDisruptionBudgets"


@pytest.mark.parametrize("variant", ["default", "everything"])
def test_network_policies_deny_by_default_and_open_only_the_gateway(chart, variant):
    documents = render(chart, VARIANTS[variant])
    policies = of_kind(documents, "NetworkPolicy")
    deny = policies[f"{RELEASE}-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    for name, pod in pod_specs(documents).items():
        assert selects(deny["podSelector"], pod["metadata"]["labels"]), f"{name} escapes default-deny"

    def rules_for(component: str) -> list[dict[str, Any]]:
        labels = {
            "app.kubernetes.io/name": "swansphere",
            "app.kubernetes.io/instance": RELEASE,
            "app.kubernetes.io/component": component,
        }
        return [
            rule
            for policy in policies.values()
            if selects(policy["spec"]["podSelector"], labels)
            for rule in policy["spec"].get("ingress", [])
        ]

    gateway_grpc = [r for r in rules_for("gateway") if {"port": "grpc", "protocol": "TCP"} in r["ports"]]
    expected_from = VARIANTS[variant].get("networkPolicy", {}).get("gateway", {}).get("from")
    assert [r.get("from") for r in gateway_grpc] == [expected_from]
    for component in ("video-encoder", "spatial-lm", "locdit", "vae-decoder", "triton"):
        for rule in rules_for(component):
            ports = [p["port"] for p in rule["ports"]]
            if ports == ["metrics"]:
                assert rule["from"] == [{"namespaceSelector": {}}], component
                continue
            assert ports == ["grpc"], component
            (peer,) = rule["from"]
            allowed = set(peer["podSelector"]["matchExpressions"][0]["values"])
            stages = {"video-encoder", "spatial-lm", "locdit", "vae-decoder"}
            assert allowed == (stages if component == "triton" else stages | {"gateway"}), component
            assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE


# --- Autoscaling, Triton, monitoring ---


def test_locdit_and_decoder_autoscale_on_cpu_and_queue_depth(chart):
    documents = render(chart, {})
    hpas = of_kind(documents, "HorizontalPodAutoscaler")
    deployments = of_kind(documents, "Deployment")
    assert sorted(hpas) == [f"{RELEASE}-locdit", f"{RELEASE}-vae-decoder"]
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert "replicas" not in deployments[name]["spec"], "the HPA owns the replica count"
        cpu, queue = hpa["spec"]["metrics"]
        assert cpu["resource"]["name"] == "cpu"
        assert queue["type"] == "External"
        assert queue["external"]["metric"]["name"] == "swansphere_queue_depth"
        stage = name.removeprefix(f"{RELEASE}-").replace("-", "_")
        assert queue["external"]["metric"]["selector"]["matchLabels"] == {"stage": stage}
    spatial = of_kind(render(chart, EVERYTHING), "HorizontalPodAutoscaler")[f"{RELEASE}-spatial-lm"]
    queue = spatial["spec"]["metrics"][1]
    assert queue["type"] == "Pods" and queue["pods"]["metric"]["name"] == "swansphere_queue_depth"


def test_triton_pulls_the_repository_from_s3_with_explicit_model_control(chart):
    documents = render(chart, {})
    pod = of_kind(documents, "Deployment")[f"{RELEASE}-triton"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["tritonserver"]
    args = container["args"]
    assert "--model-repository=s3://minio:9000/models/swansphere/current" in args
    assert "--model-control-mode=explicit" in args and "--load-model=*" in args
    assert "--metrics-config=histogram_latencies=true" in args
    assert "--model-load-thread-count=2" in args  # two paper-size loads fit the memory limit, four not
    volumes = {v["name"]: v for v in pod["volumes"]}
    shm = next(m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm")
    assert volumes[shm["name"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    for bound in ("requests", "limits"):
        assert container["resources"][bound]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    env = env_of(container)
    for name, key in (("AWS_ACCESS_KEY_ID", "access-key"), ("AWS_SECRET_ACCESS_KEY", "secret-key")):
        assert env[name] == {"secretKeyRef": {"name": "swansphere-s3", "key": key}}
    service = of_kind(documents, "Service")[f"{RELEASE}-triton"]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"grpc": 8001, "metrics": 8002}
    assert service["spec"]["type"] == "ClusterIP"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"

    https = {"s3": {"endpoint": "https://s3.example.com"}, "modelRepository": {"prefix": "/a/b/"}}
    args = of_kind(render(chart, https), "Deployment")[f"{RELEASE}-triton"]["spec"]["template"]["spec"]
    assert "--model-repository=s3://https://s3.example.com:443/models/a/b" in args["containers"][0]["args"]
    cpu = of_kind(render(chart, VARIANTS["dev"]), "Deployment")[f"{RELEASE}-triton"]["spec"]["template"]
    assert "nvidia.com/gpu" not in cpu["spec"]["containers"][0]["resources"]["limits"]
    assert f"s3://{RELEASE}-minio:9000/models/swansphere/current" in cpu["spec"]["containers"][0]["args"][0]


def test_service_monitor_only_with_the_operator_or_when_asked(chart):
    assert not of_kind(render(chart, {}), "ServiceMonitor"), "no monitoring.coreos.com/v1 offline"
    forced = of_kind(render(chart, {"metrics": {"serviceMonitor": {"alwaysRender": True}}}), "ServiceMonitor")
    (monitor,) = forced.values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    off = {"metrics": {"serviceMonitor": {"enabled": False, "alwaysRender": True}}}
    assert not of_kind(render(chart, off), "ServiceMonitor")
    for service in of_kind(render(chart, {}), "Service").values():
        assert "metrics" in [p["name"] for p in service["spec"]["ports"]], service["metadata"]["name"]


def test_secrets_are_referenced_or_created_from_values(chart):
    documents = render(chart, {})
    assert not of_kind(documents, "Secret")
    created = render(chart, {"s3": {"accessKey": "a", "secretKey": "b"}})
    (secret,) = of_kind(created, "Secret").values()
    assert set(secret["stringData"]) == {"endpoint", "access-key", "secret-key"}
    for documents_, name in ((documents, "swansphere-s3"), (created, secret["metadata"]["name"])):
        for pod in pod_specs(documents_).values():
            for container in pod["spec"]["containers"]:
                assert env_of(container)["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == name
    redis = {"redis": {"existingSecret": "redis-auth", "existingSecretKey": "uri"}}
    gateway = service_deployments(render(chart, redis))["gateway"]["spec"]["template"]["spec"]
    assert env_of(gateway["containers"][0])["SWANSPHERE_REDIS_URL"] == {
        "secretKeyRef": {"name": "redis-auth", "key": "uri"}
    }


def test_job_submitter_can_create_what_swansphere_ml_submit_creates(chart):
    documents = render(chart, {})
    (role,) = of_kind(documents, "Role").values()
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = [("batch", "jobs"), ("", "services"), ("", "configmaps"), ("kubeflow.org", "pytorchjobs")]
    for group, resource in needed:
        assert (group, resource, "create") in granted and (group, resource, "delete") in granted
    (binding,) = of_kind(documents, "RoleBinding").values()
    assert binding["subjects"][0]["name"] in of_kind(documents, "ServiceAccount")


# --- Training, ODPO ---


def test_training_job_is_what_swansphere_ml_submit_creates(chart):
    # Imported here: it pulls in torch and transformers (through the training config), seconds that
    # the other tests of this file do not need.
    from swansphere.train import submit

    documents = render(chart, {"training": TRAINING})
    name = f"{RELEASE}-swansphere"
    spec = submit.TrainSpec(
        job="swansphere",
        name=name,
        config_name="config.yaml",
        config_text=TRAINING["config"],
        nodes=2,
        procs_per_node=1,
        gpus_per_node=1,
        overrides=tuple(TRAINING["overrides"]),
    )
    config_map, service, job = submit.manifests(spec, "indexed-job")
    assert of_kind(documents, "ConfigMap")[f"{name}-config"]["data"] == config_map["data"]
    rendered_service = of_kind(documents, "Service")[name]["spec"]
    for key in ("clusterIP", "publishNotReadyAddresses", "ports"):
        assert rendered_service[key] == service["spec"][key], key
    rendered = of_kind(documents, "Job")[name]["spec"]
    for key in ("completionMode", "completions", "parallelism", "backoffLimit", "podFailurePolicy"):
        assert rendered[key] == job["spec"][key], key
    pod, expected_pod = rendered["template"]["spec"], job["spec"]["template"]["spec"]
    for key in ("subdomain", "restartPolicy", "volumes", "tolerations"):
        assert pod[key] == expected_pod[key], key
    (container,), (expected,) = pod["containers"], expected_pod["containers"]
    for key in ("command", "args", "ports", "resources", "volumeMounts"):
        assert container[key] == expected[key], key
    assert set(env_of(expected)) <= set(env_of(container))
    assert selects({"matchLabels": rendered_service["selector"]}, rendered["template"]["metadata"]["labels"])


def test_odpo_round_runs_on_a_schedule_into_its_own_folder(chart):
    values = {"odpo": {"enabled": True, "config": "job: odpo\n"}, "kafka": {"bootstrap": "kafka:9092"}}
    documents = render(chart, values)
    (cron,) = of_kind(documents, "CronJob").values()
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["torchrun"]
    args = container["args"]
    program = args[args.index("--no-python") + 1 :]
    assert program[:4] == ["swansphere-train", "odpo", "--config", "/config/odpo.yaml"]
    assert "out=s3://models/odpo/$(ODPO_ROUND)" in program
    assert "odpo.kafka_bootstrap=kafka:9092" in program
    round_env = env_of(container)["ODPO_ROUND"]
    assert round_env["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
    config = next(v for v in pod["volumes"] if v["name"] == "config")["configMap"]["name"]
    assert of_kind(documents, "ConfigMap")[config]["data"] == {"odpo.yaml": "job: odpo\n"}


# --- skaffold and the Dockerfiles ---


def skaffold() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "skaffold.yaml").read_text())


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def installed_commands() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(pyproject["project"]["scripts"])


def test_every_skaffold_artifact_builds_from_files_that_exist(chart):
    config = skaffold()
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert len(artifacts) == 7
    for image, artifact in artifacts.items():
        context = ROOT / artifact["context"]
        dockerfile = context / artifact["docker"]["dockerfile"]
        assert context.is_dir() and dockerfile.is_file(), image
        build_args = {i[1].split("=")[0] for i in dockerfile_instructions(dockerfile) if i[0] == "ARG"}
        for required in artifact.get("requires", []):
            assert required["image"] in artifacts, image
            assert required["alias"] in build_args, f"{image}: {required['alias']} is not an ARG"
    (release,) = config["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"]) == CHART
    templates = release["setValueTemplates"]
    defaults = chart.values
    for key, template in templates.items():
        node = defaults
        for part in key.split("."):
            assert part in node, f"setValueTemplates {key}: no such value"
            node = node[part]
        image = re.fullmatch(r"\{\{\.IMAGE_(?:REPO|TAG)_(\w+)\}\}.*", template).group(1)
        assert image in {name.replace("-", "_") for name in artifacts}, key
        if key.endswith(".repository"):
            assert node.replace("-", "_") == image, f"{key}: default {node} is not the artifact"
    used = {re.search(r"IMAGE_REPO_(\w+)", t).group(1) for t in templates.values() if "IMAGE_REPO" in t}
    assert used == {name.replace("-", "_") for name in artifacts}


def test_skaffold_profiles_deploy_their_values_files():
    profiles = {p["name"]: p for p in skaffold()["profiles"]}
    assert sorted(profiles) == sorted(PROFILES)
    for name, profile in profiles.items():
        files = [
            patch["value"]
            for patch in profile["patches"]
            if patch["path"] == "/deploy/helm/releases/0/valuesFiles/-"
        ]
        assert files == [f"deploy/helm/values-{name}.yaml"], name
        assert (ROOT / files[0]).is_file()
    dev = profile_values("dev")
    for key in ("videoEncoder", "spatialLm", "locdit", "vaeDecoder"):
        assert dev["stages"][key]["replicas"] == 1 and not dev["stages"][key]["autoscaling"]["enabled"]
    assert dev["gateway"]["replicas"] == 1 and dev["triton"]["gpus"] == 0


@pytest.mark.parametrize("dockerfile", sorted(DOCKER.glob("*.Dockerfile")), ids=lambda p: p.name)
def test_dockerfile_runs_an_installed_command_as_non_root_from_pinned_images(dockerfile):
    instructions = dockerfile_instructions(dockerfile)
    args = dict(i[1].split("=", 1) for i in instructions if i[0] == "ARG" and "=" in i[1] and " " not in i[1])
    artifacts = {a["image"] for a in skaffold()["build"]["artifacts"]}
    for keyword, rest in instructions:
        if keyword != "FROM":
            continue
        image = rest.split()[0]
        if match := re.fullmatch(r"\$\{(\w+)\}", image):
            image = args[match.group(1)]
            if image in artifacts:
                continue
        name, _, tag = image.rpartition(":")
        assert name and re.search(r"\d", tag) and tag != "latest", f"{dockerfile.name}: {image} is not pinned"
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1].isdigit() and users[-1] != "0", f"{dockerfile.name}: last USER {users}"
    (entrypoint,) = [json.loads(rest) for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    allowed = installed_commands() | {"tritonserver"}
    assert entrypoint[0] in allowed, f"{dockerfile.name}: {entrypoint[0]} is not installed"
    if entrypoint[0] == "tritonserver":
        triton = [rest for keyword, rest in instructions if keyword == "ARG" and "tritonserver" in rest]
        assert triton and re.search(r"nvcr\.io/nvidia/tritonserver:\d+\.\d+-py3$", triton[0])
    if entrypoint[:2] == ["swansphere", "serve"]:
        assert entrypoint[2] in SERVICES, f"{dockerfile.name}: no service {entrypoint[2]}"
        assert dockerfile.stem.replace("-", "_") == entrypoint[2]


def test_there_is_one_image_per_service_plus_triton_and_the_package():
    stems = {p.stem for p in DOCKER.glob("*.Dockerfile")}
    assert stems == {s.replace("_", "-") for s in SERVICES} | {"triton", "swansphere"}


def test_triton_image_puts_the_libraries_its_python_stub_needs_where_its_rpath_looks():
    """The 3.11 stub links the wheel's renamed libcudart through an RPATH relative to the stub, which
    the image's layout must honour, or no model's stub starts."""
    stub = pytriton_dir() / "python_backend_stubs" / "3.11" / STUB
    wheel_libs = pytriton_dir().parent.parent / "nvidia_pytriton.libs"
    dynamic = subprocess.run(["readelf", "-d", str(stub)], capture_output=True, text=True, check=True).stdout
    (rpath,) = re.findall(r"\((?:RPATH|RUNPATH)\)\s+Library r(?:un)?path: \[(.+)\]", dynamic)
    private = [
        name
        for name in re.findall(r"\(NEEDED\)\s+Shared library: \[(.+)\]", dynamic)
        if (wheel_libs / name).is_file()
    ]
    assert private, "the stub needs none of the wheel's libraries: this test checks nothing"
    dockerfile = DOCKER / "triton.Dockerfile"
    copies = {
        rest.split()[-2]: rest.split()[-1]
        for keyword, rest in dockerfile_instructions(dockerfile)
        if keyword == "COPY" and rest.startswith("--from=build")
    }
    (stub_dest,) = [dest for source, dest in copies.items() if source.endswith(f"/3.11/{STUB}")]
    (libs_dest,) = [dest for source, dest in copies.items() if source.endswith("/nvidia_pytriton.libs")]
    assert os.path.normpath(rpath.replace("$ORIGIN", os.path.dirname(stub_dest))) == libs_dest
    extracted = dockerfile.read_text()
    for name in private:
        assert f"'nvidia_pytriton.libs/{name.split('-')[0]}-'" in extracted, f"{name} is not extracted"
