"""`swansphere-ml submit JOB --config FILE`: run a training job on Kubernetes.

Two shapes, same pod. An Indexed Job gives pod `NAME-i` the hostname `NAME-i.NAME` through a headless
Service, so torchrun's static rendezvous finds rank 0 at `NAME-0.NAME` without any operator; a Kubeflow
PyTorchJob is used when that operator is installed. `--dry-run` prints the manifests instead.
"""

import argparse
import contextlib
import dataclasses
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.utils import parse_quantity

from swansphere.cli import OneLineParser, dispatch
from swansphere.errors import InputError
from swansphere.train.config import JOBS

KINDS = ("auto", "indexed-job", "pytorchjob")
DEFAULT_IMAGE = "swansphere"
"""The skaffold artifact name; skaffold (or --image / $SWANSPHERE_IMAGE) swaps in the built tag."""
RENDEZVOUS_PORT = 29500
"""torchrun's default master port; rank 0 serves the c10d TCPStore on it."""
CONFIG_DIR = "/config"
PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, PYTORCHJOB_PLURAL = "kubeflow.org", "v1", "pytorchjobs"
MAX_CONFIG_BYTES = 1_048_576
"""A ConfigMap holds at most 1 MiB."""
MAX_NAME = 52
"""Pod hostnames `NAME-INDEX` must stay under 63 characters."""
TTL_AFTER_FINISHED_S = 7 * 86400
"""Finished jobs (and, through owner references, their Service and ConfigMap) go after a week;
the run itself lives on in MLflow."""
REQUEST_TIMEOUT_S = 30
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_OVERRIDE = re.compile(r"[A-Za-z_][\w.-]*=.*", re.DOTALL)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSpec:
    """One training run as the cluster sees it; checked here so the API server never sees a bad manifest."""

    job: str
    """Which model to train, one of JOBS."""
    name: str
    """Name of the Job (and its headless Service); a DNS-1035 label of at most 52 characters."""
    config_name: str
    """File name of the config under /config (its ConfigMap key)."""
    config_text: str
    """The config file itself (YAML or JSON)."""
    namespace: str | None = None
    """Namespace written into the manifests; None leaves it to the caller (kubectl -n, kubeconfig)."""
    image: str = DEFAULT_IMAGE
    nodes: int = 1
    """Pods; torchrun `--nnodes`."""
    procs_per_node: int = 1
    """Processes per pod; torchrun `--nproc-per-node`."""
    gpus_per_node: int = 0
    """`nvidia.com/gpu` per pod; 0 asks for none."""
    cpu: str = "4"
    memory: str = "16Gi"
    shm: str = "2Gi"
    """Memory-backed /dev/shm for DataLoader workers and NCCL (the 64 MB default runs out)."""
    retries: int = 1
    """Times the whole group may fail before the job is failed."""
    s3_secret: str = "swansphere-s3"
    """Secret with keys endpoint, access-key, secret-key."""
    mlflow_uri: str | None = None
    overrides: tuple[str, ...] = ()
    """`key=value` overrides passed to swansphere-train after the config."""

    def __post_init__(self) -> None:
        if self.job not in JOBS:
            raise InputError(f"unknown job {self.job!r}; expected one of {', '.join(JOBS)}")
        if len(self.name) > MAX_NAME or not _DNS_1035.fullmatch(self.name):
            raise InputError(
                f"--name {self.name!r} must be lowercase letters, digits and '-', start with a letter, "
                f"end with a letter or digit, at most {MAX_NAME} characters"
            )
        if self.namespace is not None and (
            len(self.namespace) > 63 or not _DNS_1123.fullmatch(self.namespace)
        ):
            raise InputError(f"--namespace {self.namespace!r} is not a valid namespace name")
        if len(self.s3_secret) > 253 or not re.fullmatch(r"[a-z0-9]([-.a-z0-9]*[a-z0-9])?", self.s3_secret):
            raise InputError(f"--s3-secret {self.s3_secret!r} is not a valid Secret name")
        for flag, value, least in (
            ("--nodes", self.nodes, 1),
            ("--procs-per-node", self.procs_per_node, 1),
            ("--gpus-per-node", self.gpus_per_node, 0),
            ("--retries", self.retries, 0),
        ):
            if value < least:
                raise InputError(f"{flag} must be at least {least}, got {value}")
        if self.gpus_per_node and self.procs_per_node > self.gpus_per_node:
            raise InputError(
                f"--procs-per-node {self.procs_per_node} exceeds --gpus-per-node {self.gpus_per_node}"
            )
        cpu, memory, shm = (
            _quantity(f, v) for f, v in (("--cpu", self.cpu), ("--memory", self.memory), ("--shm", self.shm))
        )
        if cpu <= 0 or shm <= 0:
            raise InputError("--cpu and --shm must be positive")
        if shm >= memory:
            raise InputError(
                f"--shm {self.shm} must be below --memory {self.memory}: /dev/shm counts against it"
            )
        for override in self.overrides:
            if not _OVERRIDE.fullmatch(override):
                raise InputError(f"--set expects key=value, got {override!r}")

    @property
    def config_map_name(self) -> str:
        return f"{self.name}-config"

    @property
    def labels(self) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "swansphere",
            "app.kubernetes.io/component": f"train-{self.job}",
            "app.kubernetes.io/instance": self.name,
        }


def _quantity(flag: str, value: str) -> Any:
    try:
        return parse_quantity(value)
    except ValueError:
        raise InputError(f"{flag} {value!r} is not a Kubernetes quantity (e.g. 4, 500m, 16Gi)") from None


def _literal(arg: str) -> str:
    """Escape `$` so the kubelet does not expand `$(VAR)` inside user-given arguments (`$$` -> `$`)."""
    return arg.replace("$", "$$")


def read_config(path: str) -> tuple[str, str]:
    """(ConfigMap key, text) of a YAML/JSON config file that holds a mapping."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read --config {path}: {err.strerror or err}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise InputError(f"--config {path} is {len(raw)} bytes; a ConfigMap holds at most 1 MiB")
    try:
        text = raw.decode("utf-8")
        document = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise InputError(f"--config {path} is not UTF-8 text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        reason = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"--config {path} is not a YAML/JSON file: {reason}{where}") from None
    if not isinstance(document, dict):
        raise InputError(f"--config {path} must hold a mapping of settings")
    key = re.sub(r"[^-._a-zA-Z0-9]", "_", file.name)
    return key, text


def _metadata(spec: TrainSpec, name: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": dict(spec.labels)}
    if spec.namespace is not None:
        metadata["namespace"] = spec.namespace
    return metadata


def _train_args(spec: TrainSpec) -> list[str]:
    """The program torchrun starts in every process: `swansphere-train JOB --config /config/FILE k=v ...`."""
    config_path = f"{CONFIG_DIR}/{spec.config_name}"
    return ["--no-python", "swansphere-train", spec.job, "--config", _literal(config_path)] + [
        _literal(override) for override in spec.overrides
    ]


def torchrun_args(spec: TrainSpec) -> list[str]:
    """Indexed Job: static c10d rendezvous at pod 0, node rank = the pod's completion index."""
    return [
        f"--nnodes={spec.nodes}",
        f"--nproc-per-node={spec.procs_per_node}",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        f"--master-addr={spec.name}-0.{spec.name}",
        f"--master-port={RENDEZVOUS_PORT}",
        *_train_args(spec),
    ]


def _env(spec: TrainSpec) -> list[dict[str, Any]]:
    def secret(name: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": spec.s3_secret, "key": key}}}

    env = [
        secret("S3_ENDPOINT_URL", "endpoint"),
        secret("AWS_ACCESS_KEY_ID", "access-key"),
        secret("AWS_SECRET_ACCESS_KEY", "secret-key"),
        {"name": "HOME", "value": "/tmp"},
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if spec.mlflow_uri:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": spec.mlflow_uri})
    return env


def _container(spec: TrainSpec, name: str, args: list[str], port_name: str) -> dict[str, Any]:
    # requests == limits: Guaranteed QoS, so a training pod is the last one the kubelet evicts.
    resources: dict[str, Any] = {
        "requests": {"cpu": spec.cpu, "memory": spec.memory},
        "limits": {"cpu": spec.cpu, "memory": spec.memory},
    }
    if spec.gpus_per_node:
        resources["limits"]["nvidia.com/gpu"] = str(spec.gpus_per_node)
    return {
        "name": name,
        "image": spec.image,
        "command": ["torchrun"],
        "args": args,
        "env": _env(spec),
        "ports": [{"name": port_name, "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"}],
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }


def pod_template(spec: TrainSpec, container: dict[str, Any], restart_policy: str) -> dict[str, Any]:
    """The pod every node runs, whichever controller owns it."""
    pod: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": spec.config_map_name}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm}},
        ],
    }
    if spec.gpus_per_node:
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"metadata": {"labels": dict(spec.labels)}, "spec": pod}


def config_map(spec: TrainSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(spec, spec.config_map_name),
        "data": {spec.config_name: spec.config_text},
    }


def headless_service(spec: TrainSpec) -> dict[str, Any]:
    """DNS names `NAME-i.NAME` for the Job's pods, published before they are ready so rendezvous can start."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, spec.name),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": dict(spec.labels),
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}],
        },
    }


def indexed_job(spec: TrainSpec) -> dict[str, Any]:
    """One pod per node; the completion index is the node rank and `NAME-INDEX` the hostname."""
    container = _container(spec, "train", torchrun_args(spec), "rendezvous")
    template = pod_template(spec, container, "Never")
    template["spec"]["subdomain"] = spec.name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(spec, spec.name),
        "spec": {
            "completionMode": "Indexed",
            "completions": spec.nodes,
            "parallelism": spec.nodes,
            # One node failing breaks the static world for all of them: budget a failure per node per retry.
            "backoffLimit": spec.retries * spec.nodes,
            # Preemption, eviction and node drain are not the job's fault and do not spend the budget.
            "podFailurePolicy": {
                "rules": [
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
                ]
            },
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
            "template": template,
        },
    }


def pytorch_job(spec: TrainSpec) -> dict[str, Any]:
    """Kubeflow PyTorchJob: the operator sets PET_NODE_RANK / PET_MASTER_ADDR / PET_MASTER_PORT for torchrun
    (from the `pytorchjob-port` container port) and creates the Services."""
    args = [f"--nnodes={spec.nodes}", f"--nproc-per-node={spec.procs_per_node}", *_train_args(spec)]
    container = _container(spec, "pytorch", args, "pytorchjob-port")
    replica = {
        "replicas": 1,
        "restartPolicy": "OnFailure",
        "template": pod_template(spec, container, "OnFailure"),
    }
    replicas: dict[str, Any] = {"Master": replica}
    if spec.nodes > 1:
        replicas["Worker"] = {**replica, "replicas": spec.nodes - 1}
    return {
        "apiVersion": f"{PYTORCHJOB_GROUP}/{PYTORCHJOB_VERSION}",
        "kind": "PyTorchJob",
        "metadata": _metadata(spec, spec.name),
        "spec": {
            "nprocPerNode": str(spec.procs_per_node),
            "runPolicy": {
                "backoffLimit": spec.retries * spec.nodes,
                "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
            },
            "pytorchReplicaSpecs": replicas,
        },
    }


def manifests(spec: TrainSpec, kind: str) -> list[dict[str, Any]]:
    """Everything one run needs, in the order `kubectl apply` should create it."""
    if kind == "pytorchjob":
        return [config_map(spec), pytorch_job(spec)]
    if kind == "indexed-job":
        return [config_map(spec), headless_service(spec), indexed_job(spec)]
    raise InputError(f"unknown --kind {kind!r}; expected indexed-job or pytorchjob")


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the config file) as `|` blocks, so the printed ConfigMap reads like the file."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(documents: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream, as `kubectl apply -f -` takes it."""
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False)


def connect() -> tuple[client.ApiClient, str]:
    """An API client and the default namespace: kubeconfig ($KUBECONFIG, ~/.kube/config), else in-cluster."""
    kubeconfig = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        config.load_kube_config(config_file=kubeconfig)
        _, context = config.list_kube_config_contexts(config_file=kubeconfig)
        return client.ApiClient(), context.get("context", {}).get("namespace") or "default"
    except (config.ConfigException, OSError) as kube_err:
        if not os.environ.get("KUBERNETES_SERVICE_HOST"):
            reason = str(kube_err).splitlines()[0] if str(kube_err) else type(kube_err).__name__
            raise InputError(
                f"no usable kubeconfig ({kubeconfig}: {reason}) and not inside a cluster"
            ) from None
    try:
        config.load_incluster_config()
    except config.ConfigException as err:
        raise InputError(f"cannot use the in-cluster service account: {err}") from None
    namespace_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    namespace = namespace_file.read_text().strip() if namespace_file.exists() else "default"
    return client.ApiClient(), namespace


def pytorchjob_available(api: client.ApiClient) -> bool:
    """Whether the cluster serves kubeflow.org/v1 PyTorchJob (its CRD, else API discovery)."""
    crd_name = f"{PYTORCHJOB_PLURAL}.{PYTORCHJOB_GROUP}"
    try:
        crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(
            crd_name, _request_timeout=REQUEST_TIMEOUT_S
        )
        return any(v.name == PYTORCHJOB_VERSION and v.served for v in crd.spec.versions)
    except ApiException as err:
        if err.status == 404:
            return False
        if err.status != 403:
            raise
    # Reading CRDs is cluster-scoped and often forbidden; discovery is open to every authenticated user.
    try:
        found = client.CustomObjectsApi(api).get_api_resources(
            PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, _request_timeout=REQUEST_TIMEOUT_S
        )
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return any(resource.name == PYTORCHJOB_PLURAL for resource in found.resources)


def _owned_by(document: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    reference = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }
    return {**document, "metadata": {**document["metadata"], "ownerReferences": [reference]}}


def create(api: client.ApiClient, spec: TrainSpec, kind: str) -> list[str]:
    """Create the run; the Service and ConfigMap are owned by the job so deleting it removes them.

    The job goes first (its pods wait for the ConfigMap volume); if the rest fails it is deleted again.
    """
    core, timeout = client.CoreV1Api(api), REQUEST_TIMEOUT_S
    documents = manifests(spec, kind)
    owner_document, owned = documents[-1], documents[:-1]
    if kind == "pytorchjob":
        custom = client.CustomObjectsApi(api)
        owner = custom.create_namespaced_custom_object(
            PYTORCHJOB_GROUP,
            PYTORCHJOB_VERSION,
            spec.namespace,
            PYTORCHJOB_PLURAL,
            owner_document,
            _request_timeout=timeout,
        )
    else:
        owner = (
            client.BatchV1Api(api)
            .create_namespaced_job(spec.namespace, owner_document, _request_timeout=timeout)
            .to_dict()
        )
        owner = {"apiVersion": "batch/v1", "kind": "Job", "metadata": owner["metadata"]}
    try:
        for document in owned:
            body = _owned_by(document, owner)
            if document["kind"] == "ConfigMap":
                core.create_namespaced_config_map(spec.namespace, body, _request_timeout=timeout)
            else:
                core.create_namespaced_service(spec.namespace, body, _request_timeout=timeout)
    except Exception:
        with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError):
            _delete_owner(api, spec, kind)
        raise
    return [f"{document['kind'].lower()}/{document['metadata']['name']}" for document in documents]


def _delete_owner(api: client.ApiClient, spec: TrainSpec, kind: str) -> None:
    options = client.V1DeleteOptions(propagation_policy="Background")
    if kind == "pytorchjob":
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, spec.namespace, PYTORCHJOB_PLURAL, spec.name, body=options
        )
    else:
        client.BatchV1Api(api).delete_namespaced_job(spec.name, spec.namespace, body=options)


def _api_error(err: Exception, spec: TrainSpec) -> InputError:
    """One line for the user out of a client or connection failure."""
    if isinstance(err, ApiException):
        if err.status == 409:
            return InputError(
                f"{spec.name} already exists in namespace {spec.namespace}; pick another --name"
            )
        return InputError(f"Kubernetes API refused the request: {err.status} {err.reason}")
    reason = str(getattr(err, "reason", None) or err).splitlines()[0]
    return InputError(f"cannot reach the Kubernetes API server: {reason}")


def submit(args: argparse.Namespace) -> int:
    config_name, config_text = read_config(args.config)
    spec = TrainSpec(
        job=args.job,
        name=args.name or f"{args.job}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}",
        config_name=config_name,
        config_text=config_text,
        namespace=args.namespace,
        image=args.image,
        nodes=args.nodes,
        procs_per_node=max(args.gpus_per_node, 1) if args.procs_per_node is None else args.procs_per_node,
        gpus_per_node=args.gpus_per_node,
        cpu=args.cpu,
        memory=args.memory,
        shm=args.shm,
        retries=args.retries,
        s3_secret=args.s3_secret,
        mlflow_uri=args.mlflow_uri,
        overrides=tuple(args.set),
    )
    if args.dry_run:
        kind = "indexed-job" if args.kind == "auto" else args.kind
        sys.stdout.write(to_yaml(manifests(spec, kind)))
        return 0
    api, default_namespace = connect()
    with api:
        if spec.namespace is None:
            spec = dataclasses.replace(spec, namespace=default_namespace)
        try:
            kind = args.kind
            if kind == "auto":
                kind = "pytorchjob" if pytorchjob_available(api) else "indexed-job"
            created = create(api, spec, kind)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
            raise _api_error(err, spec) from None
    print(f"created {', '.join(created)} in namespace {spec.namespace}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="swansphere-ml", description="SwanSphere training jobs on Kubernetes.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    sub = subparsers.add_parser(
        "submit",
        help="run a training job on the cluster",
        description=(
            "Create a ConfigMap with the config and either an Indexed Job + headless Service "
            "(torchrun static rendezvous at pod 0) or a Kubeflow PyTorchJob. "
            "S3 credentials come from a Secret with keys endpoint, access-key, secret-key."
        ),
    )
    sub.add_argument("job", choices=JOBS, help="what to train")
    sub.add_argument(
        "--config", required=True, metavar="FILE", help="YAML or JSON config for swansphere-train"
    )
    sub.add_argument("--name", help="job name (default JOB-YYYYMMDD-HHMMSS, UTC)")
    sub.add_argument("--namespace", help="namespace (default: the kubeconfig context's)")
    sub.add_argument(
        "--image", default=os.environ.get("SWANSPHERE_IMAGE", DEFAULT_IMAGE), help="trainer image"
    )
    sub.add_argument("--nodes", type=int, default=1, metavar="N", help="pods (torchrun --nnodes)")
    sub.add_argument("--procs-per-node", type=int, metavar="P", help="processes per pod (default max(G, 1))")
    sub.add_argument("--gpus-per-node", type=int, default=0, metavar="G", help="nvidia.com/gpu per pod")
    sub.add_argument("--cpu", default="4", help="CPU per pod (request = limit)")
    sub.add_argument("--memory", default="16Gi", help="memory per pod (request = limit)")
    sub.add_argument("--shm", default="2Gi", help="memory-backed /dev/shm per pod, part of --memory")
    sub.add_argument("--retries", type=int, default=1, help="times the job may fail as a whole")
    sub.add_argument(
        "--s3-secret", default="swansphere-s3", metavar="NAME", help="Secret with S3 credentials"
    )
    sub.add_argument("--mlflow-uri", metavar="URI", help="MLFLOW_TRACKING_URI inside the pods")
    sub.add_argument("--kind", choices=KINDS, default="auto", help="auto: PyTorchJob if its CRD is installed")
    sub.add_argument("--dry-run", action="store_true", help="print the manifests as YAML, touch no cluster")
    sub.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override for swansphere-train"
    )
    sub.set_defaults(run=submit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(build_parser().parse_args(argv), "swansphere-ml")
