#!/usr/bin/env python3
"""Checks the Kubernetes deployment in k8s/ offline, without a cluster.

    scripts/check_k8s.py --rlvr target/debug/rlvr --rlvr-verifier target/debug/rlvr-verifier
    scripts/check_k8s.py --no-binaries        # steps 1-3 only (no rlvr build at hand)

1. Renders every overlay (k8s/overlays/*) and k8s/files with `kubectl kustomize`.
2. Validates every rendered object: built-in kinds against the Kubernetes JSON schemas that
   kubernetes-validate ships, in strict mode (an unknown or misspelt field fails); custom resources
   (KEDA) with jsonschema against the openAPIV3Schema of their CRDs in k8s/schemas/, made strict the
   same way (every object schema that lists its properties refuses others).
3. Asserts the policy: restricted Pod Security on every container, read-only root filesystems,
   requests and limits, probes on /healthz and /readyz, the verifiers' egress NetworkPolicy, GPUs in
   the gpu overlay, and that names the manifests pass each other (Services, ports, volumes, the run's
   name, the KEDA trigger's stream) refer to something that is there.
4. Runs the run config (the ConfigMap the learner mounts) through the real `rlvr plan`.
5. Runs every container's command and args (and plain env values) through the real binaries'
   argument parsers (`RLVR_PARSE_ONLY=1`: parse, print, exit 0; or exit 2 with clap's error).

Each step also checks that it can fail: a self-test mutates the rendered objects (a removed
readOnlyRootFilesystem, a dropped egress policy, a misspelt field, ...) and requires a finding for
each; a bad flag must be refused by the parsers and a config with an unknown field by `rlvr plan`.

Exits 1 naming the overlay, the object, the rule and what is wrong on any failure; prints a summary of
what it checked on success. Needs Python 3.11, kubectl, and scripts/requirements-test.txt.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

try:
    import jsonschema
    import kubernetes_validate
    import yaml
    from kubernetes_validate import utils as kv_utils
    from referencing import Registry, Resource
except ImportError as e:
    sys.exit(f"check_k8s: {e.name} is missing: pip install -r scripts/requirements-test.txt")

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
SCHEMAS = K8S / "schemas"
DEFAULT_KUBE_VERSION = "1.32"
# Binaries whose command lines the parsers check, by the name a container's command[0] uses.
RLVR_BINARIES = ("rlvr", "rlvr-verifier")
# Containers of other programs: their args are not checked (say so in the summary).
PARSE_TIMEOUT_S = 30

POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


# ---------------------------------------------------------------------------------------------------
# Findings


@dataclass
class Findings:
    items: list[str] = field(default_factory=list)

    def add(self, where: str, rule: str, message: str) -> None:
        self.items.append(f"{where}: [{rule}] {message}")

    def rules(self) -> set[str]:
        return {i.split("[", 1)[1].split("]", 1)[0] for i in self.items}


def describe(obj: dict) -> str:
    return f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"


# ---------------------------------------------------------------------------------------------------
# 1. Render


def render_dirs() -> dict[str, Path]:
    dirs = {f"overlays/{d.name}": d for d in sorted((K8S / "overlays").iterdir()) if (d / "kustomization.yaml").exists()}
    if (K8S / "files" / "kustomization.yaml").exists():
        dirs["files"] = K8S / "files"
    return dirs


def render(kubectl: str, directory: Path) -> list[dict]:
    run = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise SystemExit(f"check_k8s: `kubectl kustomize {directory.relative_to(ROOT)}` failed:\n{run.stderr.strip()}")
    return [d for d in yaml.safe_load_all(run.stdout) if d]


# ---------------------------------------------------------------------------------------------------
# 2. Schemas


def strictify(schema: object) -> None:
    """Makes every object schema that lists its properties refuse other properties, as the strict
    Kubernetes schemas do, unless it says it keeps unknown fields."""
    if isinstance(schema, list):
        for s in schema:
            strictify(s)
        return
    if not isinstance(schema, dict):
        return
    if "properties" in schema and "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        schema["additionalProperties"] = False
    for key in ("properties", "patternProperties"):
        for sub in (schema.get(key) or {}).values():
            strictify(sub)
    for key in ("items", "additionalProperties", "not"):
        strictify(schema.get(key))
    for key in ("anyOf", "allOf", "oneOf"):
        strictify(schema.get(key))


@dataclass
class CustomResourceSchemas:
    """The CRDs in k8s/schemas/, by (apiVersion, kind)."""

    kube_version: str
    schemas: dict[tuple[str, str], dict] = field(default_factory=dict)
    # Custom resources' metadata is ObjectMeta: validated with the strict Kubernetes schema.
    object_meta: jsonschema.protocols.Validator | None = None

    @classmethod
    def load(cls, kube_version: str) -> CustomResourceSchemas:
        me = cls(kube_version)
        for path in sorted(SCHEMAS.glob("*.yaml")):
            for crd in yaml.safe_load_all(path.read_text()):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    if not version.get("served"):
                        continue
                    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                    strictify(schema)
                    me.schemas[(f"{group}/{version['name']}", kind)] = schema
        me.object_meta = me._kube_schema("objectmeta-meta-v1.json")
        return me

    def _kube_schema(self, name: str) -> jsonschema.protocols.Validator:
        wanted = kv_utils.Version(self.kube_version)
        version = max((v for v in kv_utils.all_versions() if kv_utils.Version(kv_utils.major_minor(v)) <= wanted), key=kv_utils.Version)
        base = f"kubernetes-json-schema/v{version}-local-strict"
        schema = kv_utils.schema_contents(f"{base}/{name}", self.kube_version)
        definitions = kv_utils.schema_contents(f"{base}/_definitions.json", self.kube_version)
        registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
        return jsonschema.Draft202012Validator(schema, registry=registry)

    def validate(self, obj: dict) -> list[str]:
        schema = self.schemas.get((obj.get("apiVersion"), obj.get("kind")))
        if schema is None:
            return [f"no schema for {obj.get('apiVersion')} {obj.get('kind')} (add its CRD to k8s/schemas/)"]
        errors = []
        for e in jsonschema.Draft202012Validator(schema).iter_errors(obj):
            errors.append(f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}")
        for e in self.object_meta.iter_errors(obj.get("metadata", {})):
            errors.append(f"{'.'.join(['metadata', *map(str, e.absolute_path)])}: {e.message}")
        return errors


def check_schemas(where: str, objs: list[dict], kube_version: str, crds: CustomResourceSchemas, findings: Findings) -> None:
    for obj in objs:
        at = f"{where}: {describe(obj)}"
        if (obj.get("apiVersion"), obj.get("kind")) in crds.schemas:
            for error in crds.validate(obj):
                findings.add(at, "schema", f"{error} (CRD schema, strict)")
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(root)"
            findings.add(at, "schema", f"{path}: {e.message} (Kubernetes {e.version}, strict)")
        except kubernetes_validate.SchemaNotFoundError:
            findings.add(at, "schema", f"no schema for {obj.get('apiVersion')} {obj.get('kind')} in Kubernetes {kube_version} nor in k8s/schemas/")


# ---------------------------------------------------------------------------------------------------
# 3. Policy


@dataclass
class Pod:
    owner: dict
    labels: dict
    spec: dict
    claim_templates: list[str]

    @property
    def where(self) -> str:
        return describe(self.owner)

    def containers(self) -> list[dict]:
        return list(self.spec.get("initContainers") or []) + list(self.spec.get("containers") or [])


def pods_of(objs: list[dict]) -> list[Pod]:
    pods = []
    for obj in objs:
        kind = obj.get("kind")
        if kind == "Pod":
            pods.append(Pod(obj, obj["metadata"].get("labels") or {}, obj["spec"], []))
        elif kind in POD_TEMPLATE_KINDS:
            template = obj["spec"]["template"]
            claims = [t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates") or []]
            pods.append(Pod(obj, template.get("metadata", {}).get("labels") or {}, template["spec"], claims))
        elif kind == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
            pods.append(Pod(obj, template.get("metadata", {}).get("labels") or {}, template["spec"], []))
    return pods


def binary_of(container: dict) -> str | None:
    command = container.get("command") or []
    return os.path.basename(command[0]) if command else None


def image_name(container: dict) -> str:
    """`registry/path/rlvr-cuda:tag@sha256:…` -> `rlvr-cuda`."""
    image = container.get("image", "").split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def env_values(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


def setting(container: dict, flag: str, env: str | None = None) -> str | None:
    """A flag's value from the container's args (`--flag V` or `--flag=V`), else its env var."""
    args = container.get("args") or []
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return env_values(container).get(env) if env else None


def subcommand(container: dict) -> str | None:
    args = [a for a in (container.get("command") or [])[1:] + (container.get("args") or []) if not a.startswith("-")]
    return args[0] if args else None


def selects(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        k, op, values = e["key"], e["operator"], e.get("values") or []
        if (op == "In" and labels.get(k) not in values) or (op == "NotIn" and labels.get(k) in values):
            return False
        if (op == "Exists" and k not in labels) or (op == "DoesNotExist" and k in labels):
            return False
    return True


def container_port(container: dict, port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p["containerPort"]
    return int(port) if str(port).isdigit() else None


def port_of(address: str | None) -> int | None:
    if not address or ":" not in address:
        return None
    tail = address.rsplit(":", 1)[1]
    return int(tail) if tail.isdigit() else None


def effective(pod: Pod, container: dict, key: str):
    c = (container.get("securityContext") or {}).get(key)
    return c if c is not None else (pod.spec.get("securityContext") or {}).get(key)


def has_quantity(resources: dict, section: str, name: str) -> bool:
    return name in ((resources or {}).get(section) or {})


def check_container_security(where: str, pod: Pod, findings: Findings) -> None:
    spec = pod.spec
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            findings.add(where, "restricted", f"{host} must not be set")
    for v in spec.get("volumes") or []:
        if "hostPath" in v:
            findings.add(where, "restricted", f"volume {v['name']} is a hostPath")
    if spec.get("automountServiceAccountToken") is not False:
        findings.add(where, "no-service-account-token", "automountServiceAccountToken must be false: no rlvr process talks to the Kubernetes API")
    # Service links inject <SERVICE>_PORT etc. for every Service, e.g. RLVR_REDIS_PORT, into a
    # namespace whose binaries read `RLVR_…` variables as settings.
    if spec.get("enableServiceLinks") is not False:
        findings.add(where, "service-links", "enableServiceLinks must be false (Service env vars like RLVR_REDIS_PORT would land among the RLVR_ settings)")
    uses_claims = pod.claim_templates or any("persistentVolumeClaim" in v for v in spec.get("volumes") or [])
    if uses_claims and not (spec.get("securityContext") or {}).get("fsGroup"):
        findings.add(where, "fs-group", "a pod with persistent volumes needs securityContext.fsGroup so that uid 10001 can write them")
    for c in pod.containers():
        at = f"{where} container {c['name']}"
        sc = c.get("securityContext") or {}
        if effective(pod, c, "runAsNonRoot") is not True:
            findings.add(at, "non-root", "runAsNonRoot must be true (pod or container securityContext)")
        user = effective(pod, c, "runAsUser")
        if not isinstance(user, int) or user == 0:
            findings.add(at, "non-root", f"runAsUser must be set and non-zero (is {user!r})")
        if sc.get("privileged"):
            findings.add(at, "restricted", "privileged must not be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            findings.add(at, "no-escalation", "securityContext.allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            findings.add(at, "drop-all", "securityContext.capabilities.drop must contain ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            findings.add(at, "drop-all", f"capabilities.add {caps['add']} (restricted allows NET_BIND_SERVICE only)")
        seccomp = (effective(pod, c, "seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            findings.add(at, "seccomp", f"seccompProfile.type must be RuntimeDefault (is {seccomp!r})")
        if sc.get("readOnlyRootFilesystem") is not True:
            findings.add(at, "read-only-root", "securityContext.readOnlyRootFilesystem must be true")
        for section in ("requests", "limits"):
            for name in ("cpu", "memory"):
                if not has_quantity(c.get("resources"), section, name):
                    findings.add(at, "resources", f"resources.{section}.{name} is missing")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
        empty_dirs = {v["name"] for v in spec.get("volumes") or [] if "emptyDir" in v}
        if mounts.get("/tmp") not in empty_dirs:
            findings.add(at, "writable-tmp", "the root filesystem is read-only: mount an emptyDir at /tmp")


def check_probes(where: str, pod: Pod, findings: Findings) -> None:
    for c in pod.containers():
        binary = binary_of(c)
        at = f"{where} container {c['name']}"
        if binary is None and image_name(c).startswith("rlvr"):
            findings.add(at, "command", "set `command` explicitly (its args are checked against that binary's parser)")
        if binary not in RLVR_BINARIES:
            continue
        address = setting(c, "--dashboard", "RLVR_DASHBOARD") or setting(c, "--metrics-addr", "RLVR_METRICS_ADDR")
        serves = port_of(address)
        if serves is None:
            findings.add(at, "probes", "serves no /healthz and /readyz: pass --metrics-addr (actor, verifier) or --dashboard (learner) with a port")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", None)):
            p = c.get(probe)
            if not p:
                findings.add(at, "probes", f"{probe} is missing")
                continue
            get = p.get("httpGet")
            if path is not None and (not get or get.get("path") != path):
                findings.add(at, "probes", f"{probe} must be an httpGet of {path}")
            if get and serves is not None and container_port(c, get.get("port")) != serves:
                findings.add(at, "probes", f"{probe} probes port {get.get('port')!r}, but the process serves on {address}")


def check_gpu(where: str, pod: Pod, gpu_overlay: bool, findings: Findings) -> None:
    rlvr = [c for c in pod.containers() if binary_of(c) == "rlvr"]
    for c in pod.containers():
        at = f"{where} container {c['name']}"
        wants_gpu = has_quantity(c.get("resources"), "limits", "nvidia.com/gpu")
        if not gpu_overlay:
            if wants_gpu or image_name(c) == "rlvr-cuda":
                findings.add(at, "gpu", "only the gpu overlay asks for GPUs or uses rlvr-cuda")
            continue
        if c not in rlvr:
            continue
        if image_name(c) != "rlvr-cuda":
            findings.add(at, "gpu", f"image {c.get('image')!r}: the gpu overlay runs rlvr in the rlvr-cuda image")
        limit = str(((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu"))
        if not wants_gpu or not limit.isdigit() or int(limit) < 1:
            findings.add(at, "gpu", "resources.limits[nvidia.com/gpu] must be at least 1")
        shm = next((m for m in c.get("volumeMounts") or [] if m["mountPath"] == "/dev/shm"), None)
        volume = next((v for v in pod.spec.get("volumes") or [] if shm and v["name"] == shm["name"]), None)
        if not volume or (volume.get("emptyDir") or {}).get("medium") != "Memory":
            findings.add(at, "gpu", "mount an emptyDir with medium Memory at /dev/shm")
    if gpu_overlay and rlvr:
        tolerated = any(t.get("key") == "nvidia.com/gpu" and t.get("effect") in (None, "NoSchedule") for t in pod.spec.get("tolerations") or [])
        if not tolerated:
            findings.add(where, "gpu", "tolerate the nvidia.com/gpu NoSchedule taint of GPU nodes")


def find(objs: list[dict], kind: str, name: str) -> dict | None:
    return next((o for o in objs if o.get("kind") == kind and o["metadata"].get("name") == name), None)


def service_target(where: str, objs: list[dict], pods: list[Pod], host: str, port: int, what: str, findings: Findings) -> Pod | None:
    """The pod behind Service `host` port `port`, reporting what does not fit."""
    name = host.split(".")[0]
    svc = find(objs, "Service", name)
    if svc is None:
        findings.add(where, "refs", f"{what} names host {host!r}, but there is no Service {name!r}")
        return None
    sp = next((p for p in svc["spec"].get("ports") or [] if p.get("port") == port), None)
    if sp is None:
        findings.add(where, "refs", f"{what} uses port {port}, which Service {name} does not expose")
        return None
    backends = [p for p in pods if svc["spec"].get("selector") and all(p.labels.get(k) == v for k, v in svc["spec"]["selector"].items())]
    if not backends:
        findings.add(where, "refs", f"Service {name} selects no pod of the deployment")
        return None
    target = sp.get("targetPort", port)
    for pod in backends:
        if not any(container_port(c, target) is not None and any(cp.get("containerPort") == container_port(c, target) for cp in c.get("ports") or []) for c in pod.containers()):
            findings.add(where, "refs", f"Service {name} port {port} targets {target!r}, which no container of {pod.where} declares")
    return backends[0]


def mounted_file(pod: Pod, container: dict, objs: list[dict], path: str) -> tuple[dict, str] | None:
    """The ConfigMap and key that `path` in the container comes from."""
    for m in container.get("volumeMounts") or []:
        root = m["mountPath"].rstrip("/") + "/"
        if not path.startswith(root):
            continue
        volume = next((v for v in pod.spec.get("volumes") or [] if v["name"] == m["name"]), {})
        source = volume.get("configMap")
        if not source:
            return None
        relative = m.get("subPath") or path[len(root):]
        items = {i["path"]: i["key"] for i in source.get("items") or []}
        key = items.get(relative, relative if not items else None)
        cm = find(objs, "ConfigMap", source["name"])
        if cm is None or key not in (cm.get("data") or {}):
            return None
        return cm, key
    return None


@dataclass
class Rendered:
    name: str
    objs: list[dict]
    # run.toml texts the learners mount (for step 4).
    run_configs: list[tuple[str, str]] = field(default_factory=list)


def check_policy(r: Rendered, findings: Findings) -> None:
    objs, where = r.objs, r.name
    pods = pods_of(objs)
    r.run_configs = []
    for pod in pods:
        at = f"{where}: {pod.where}"
        check_container_security(at, pod, findings)
        check_probes(at, pod, findings)
        check_gpu(at, pod, "gpu" in where, findings)
        check_volume_refs(at, pod, objs, findings)
        check_stateful(at, pod, findings)
    check_namespace(where, objs, findings)
    run_name = check_run_config(r, pods, findings)
    check_connections(where, objs, pods, findings)
    check_verifier_egress(where, objs, pods, findings)
    check_autoscaling(where, objs, pods, run_name, findings)


def check_stateful(at: str, pod: Pod, findings: Findings) -> None:
    """The learner is a Job that restarts on failure; Redis keeps its append-only file on a volume."""
    persistent = set(pod.claim_templates) | {v["name"] for v in pod.spec.get("volumes") or [] if "persistentVolumeClaim" in v}
    for c in pod.containers():
        is_learner = binary_of(c) == "rlvr" and subcommand(c) == "learner"
        if is_learner and (pod.owner.get("kind") != "Job" or pod.spec.get("restartPolicy") != "OnFailure"):
            findings.add(f"{at} container {c['name']}", "learner-job", "the learner runs as a Job with restartPolicy OnFailure (a finished run must not start again; a failed one resumes)")
        if binary_of(c) == "redis-server":
            data = setting(c, "--dir")
            mounted = {m["mountPath"].rstrip("/"): m["name"] for m in c.get("volumeMounts") or []}
            if setting(c, "--appendonly") != "yes":
                findings.add(f"{at} container {c['name']}", "redis-aof", "run redis-server with --appendonly yes: a restarted Redis must keep the streams")
            if not data or mounted.get(data.rstrip("/")) not in persistent:
                findings.add(f"{at} container {c['name']}", "redis-aof", f"--dir {data!r} must be a persistent volume's mount path")


def check_volume_refs(at: str, pod: Pod, objs: list[dict], findings: Findings) -> None:
    for v in pod.spec.get("volumes") or []:
        if "persistentVolumeClaim" in v and find(objs, "PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) is None:
            findings.add(at, "refs", f"volume {v['name']}: no PersistentVolumeClaim {v['persistentVolumeClaim']['claimName']!r}")
        if "configMap" in v and find(objs, "ConfigMap", v["configMap"]["name"]) is None and not v["configMap"].get("optional"):
            findings.add(at, "refs", f"volume {v['name']}: no ConfigMap {v['configMap']['name']!r}")
    volumes = {v["name"] for v in pod.spec.get("volumes") or []} | set(pod.claim_templates)
    for c in pod.containers():
        for m in c.get("volumeMounts") or []:
            if m["name"] not in volumes:
                findings.add(f"{at} container {c['name']}", "refs", f"mounts volume {m['name']!r}, which the pod does not have")
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref and find(objs, "Secret", ref["name"]) is None and not ref.get("optional"):
                findings.add(f"{at} container {c['name']}", "refs", f"env {e['name']}: Secret {ref['name']!r} is not part of the deployment; mark it optional")


def check_namespace(where: str, objs: list[dict], findings: Findings) -> None:
    namespaces = [o for o in objs if o.get("kind") == "Namespace"]
    for ns in namespaces:
        labels = ns["metadata"].get("labels") or {}
        if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
            findings.add(f"{where}: {describe(ns)}", "pod-security-admission", "label pod-security.kubernetes.io/enforce must be restricted")
    expected = namespaces[0]["metadata"]["name"] if len(namespaces) == 1 else None
    for o in objs:
        if o.get("kind") != "Namespace" and expected and o["metadata"].get("namespace") != expected:
            findings.add(f"{where}: {describe(o)}", "namespace", f"is in namespace {o['metadata'].get('namespace')!r}, not {expected!r}")


def check_run_config(r: Rendered, pods: list[Pod], findings: Findings) -> str | None:
    """Finds the learners' run.toml; the workers' --run must be its run. Returns the run's name."""
    learner_runs = []
    for pod in pods:
        for c in pod.containers():
            if binary_of(c) != "rlvr" or subcommand(c) != "learner":
                continue
            at = f"{r.name}: {pod.where} container {c['name']}"
            paths = [a for a in c.get("args") or [] if a.endswith(".toml")] or [env_values(c).get("RLVR_CONFIG")]
            if not paths[0]:
                findings.add(at, "run-config", "the learner is given no run config")
                continue
            source = mounted_file(pod, c, r.objs, paths[0])
            if source is None:
                findings.add(at, "run-config", f"{paths[0]} is not mounted from a ConfigMap of the deployment")
                continue
            cm, key = source
            text = cm["data"][key]
            r.run_configs.append((f"{r.name}: {describe(cm)} key {key}", text))
            try:
                run = (tomllib.loads(text).get("distributed") or {}).get("run", "default")
            except tomllib.TOMLDecodeError as e:
                findings.add(at, "run-config", f"{describe(cm)} {key} is not TOML: {e}")
                continue
            learner_runs.append(setting(c, "--run", "RLVR_RUN") or run)
    run_name = learner_runs[0] if learner_runs else None
    for pod in pods:
        for c in pod.containers():
            if binary_of(c) in RLVR_BINARIES and subcommand(c) in ("actor", "serve") and run_name is not None:
                worker_run = setting(c, "--run", "RLVR_RUN") or "default"
                if worker_run != run_name:
                    findings.add(f"{r.name}: {pod.where} container {c['name']}", "refs", f"--run {worker_run!r}, but the learner's run is {run_name!r}")
    return run_name


def check_connections(where: str, objs: list[dict], pods: list[Pod], findings: Findings) -> None:
    """Every --redis URL and the weight server's advertised host reach a Service with a backend."""
    for pod in pods:
        for c in pod.containers():
            if binary_of(c) not in RLVR_BINARIES:
                continue
            at = f"{where}: {pod.where} container {c['name']}"
            url = setting(c, "--redis", "RLVR_REDIS_URL")
            if url:
                u = urllib.parse.urlsplit(url)
                service_target(at, objs, pods, u.hostname or "", u.port or 6379, f"--redis {url}", findings)
            host = setting(c, "--weights-host", "RLVR_WEIGHTS_HOST")
            if host:
                port = port_of(setting(c, "--weights-bind", "RLVR_WEIGHTS_BIND"))
                if not port:
                    findings.add(at, "refs", "--weights-host without a --weights-bind port: the actors could not be told where to connect")
                    continue
                backend = service_target(at, objs, pods, host, port, f"--weights-host {host}", findings)
                if backend is not None and backend is not pod:
                    findings.add(at, "refs", f"Service {host} selects {backend.where}, not this learner")


def pod_labels_running(pods: list[Pod], binary: str) -> list[dict]:
    return [p.labels for p in pods if any(binary_of(c) == binary for c in p.containers())]


def check_verifier_egress(where: str, objs: list[dict], pods: list[Pod], findings: Findings) -> None:
    verifiers = pod_labels_running(pods, "rlvr-verifier")
    redis = pod_labels_running(pods, "redis-server")
    if not verifiers:
        return
    at = f"{where}: verifier pods"
    for labels in verifiers:
        policies = [
            np for np in objs
            if np.get("kind") == "NetworkPolicy" and "Egress" in (np["spec"].get("policyTypes") or []) and selects(np["spec"].get("podSelector"), labels)
        ]
        if not policies:
            findings.add(at, "verifier-egress", "no NetworkPolicy with policyTypes Egress selects the verifier pods")
            continue
        allowed, reported = set(), len(findings.items)
        for np in policies:
            np_at = f"{where}: {describe(np)}"
            for i, rule in enumerate(np["spec"].get("egress") or []):
                ports = rule.get("ports") or []
                if not ports:
                    findings.add(np_at, "verifier-egress", f"egress[{i}] allows every port")
                    continue
                numbers = set()
                for p in ports:
                    if not isinstance(p.get("port"), int) or p.get("endPort"):
                        findings.add(np_at, "verifier-egress", f"egress[{i}]: give single numeric ports (got {p})")
                    numbers.add((p.get("protocol", "TCP"), p.get("port")))
                if numbers <= {("UDP", 53), ("TCP", 53)}:
                    allowed |= numbers
                    continue
                if numbers != {("TCP", 6379)}:
                    findings.add(np_at, "verifier-egress", f"egress[{i}] allows {sorted(numbers)}: only TCP 6379 (Redis) and port 53 (DNS) are allowed")
                    continue
                peers = rule.get("to") or []
                if not peers:
                    findings.add(np_at, "verifier-egress", f"egress[{i}] allows port 6379 to any address: restrict it to the Redis pods")
                for peer in peers:
                    if "ipBlock" in peer or "namespaceSelector" in peer or not any(selects(peer.get("podSelector"), r) for r in redis):
                        findings.add(np_at, "verifier-egress", f"egress[{i}] peer {peer} is not (only) the Redis pods of this namespace")
                    elif not all(selects(peer["podSelector"], p.labels) == (p.labels in redis) for p in pods):
                        findings.add(np_at, "verifier-egress", f"egress[{i}] peer {peer} selects pods other than Redis")
                allowed.add(("TCP", 6379))
        for need in (("TCP", 6379), ("UDP", 53), ("TCP", 53)):
            # (Not when a rule was refused above: what it would have allowed is not known.)
            if need not in allowed and len(findings.items) == reported:
                findings.add(at, "verifier-egress", f"egress to {need[0]} {need[1]} is not allowed: the verifiers need Redis and DNS")


def check_autoscaling(where: str, objs: list[dict], pods: list[Pod], run_name: str | None, findings: Findings) -> None:
    targets: dict[str, list[str]] = {}
    for o in objs:
        if o.get("kind") == "HorizontalPodAutoscaler":
            ref = o["spec"]["scaleTargetRef"]
        elif o.get("kind") == "ScaledObject":
            ref = {"kind": "Deployment", **o["spec"]["scaleTargetRef"]}
        else:
            continue
        if find(objs, ref.get("kind", "Deployment"), ref["name"]) is None:
            findings.add(f"{where}: {describe(o)}", "autoscaling", f"scales {ref.get('kind')} {ref['name']}, which is not part of the deployment")
        targets.setdefault(ref["name"], []).append(describe(o))
    for name, scalers in targets.items():
        if len(scalers) > 1:
            findings.add(f"{where}: Deployment {name}", "autoscaling", f"scaled by {' and '.join(scalers)}: one autoscaler per workload (the keda component deletes the HPA)")
    for so in (o for o in objs if o.get("kind") == "ScaledObject"):
        at = f"{where}: {describe(so)}"
        target = find(objs, "Deployment", so["spec"]["scaleTargetRef"]["name"])
        verifier = next((c for c in (target or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", []) if binary_of(c) == "rlvr-verifier"), None)
        for t in so["spec"].get("triggers") or []:
            if t.get("type") != "redis-streams" or verifier is None:
                continue
            meta = t.get("metadata") or {}
            run = setting(verifier, "--run", "RLVR_RUN") or run_name or "default"
            # rlvr's keys are `rlvr:{RUN}:…`: the braces are a Redis Cluster hash tag (docs/protocol.md).
            if meta.get("stream") != f"rlvr:{{{run}}}:rollouts":
                findings.add(at, "keda", f"stream {meta.get('stream')!r}: the verifiers of run {run!r} read 'rlvr:{{{run}}}:rollouts'")
            if meta.get("consumerGroup") != "verifiers":
                findings.add(at, "keda", f"consumerGroup {meta.get('consumerGroup')!r}: the verifiers' group is 'verifiers'")
            if "lagCount" not in meta:
                findings.add(at, "keda", "scale on lagCount (entries not yet delivered to any verifier)")
            url = urllib.parse.urlsplit(setting(verifier, "--redis", "RLVR_REDIS_URL") or "")
            host, _, port = (meta.get("address") or "").rpartition(":")
            labels = host.split(".")
            namespace = so["metadata"].get("namespace")
            if labels[0] != (url.hostname or "").split(".")[0] or len(labels) < 2 or labels[1] != namespace or port != str(url.port or 6379):
                findings.add(at, "keda", f"address {meta.get('address')!r}: KEDA's operator runs in its own namespace; use '{url.hostname}.{namespace}.svc.cluster.local:{url.port or 6379}'")


# ---------------------------------------------------------------------------------------------------
# Self-test: each mutation must be caught.


def _obj(objs, kind, name):
    o = find(objs, kind, name)
    if o is None:
        raise LookupError(f"self-test: the rendered deployment has no {kind} {name}")
    return o


def _container(objs, kind, name):
    o = _obj(objs, kind, name)
    return o["spec"]["template"]["spec"]["containers"][0]


def _drop_key(d: dict, *path: str) -> None:
    for p in path[:-1]:
        d = d[p]
    del d[path[-1]]


MUTATIONS = [
    # (overlay, what, mutate, rule expected, layer)
    ("overlays/cpu", "verifier without readOnlyRootFilesystem",
     lambda o: _drop_key(_container(o, "Deployment", "rlvr-verifier"), "securityContext", "readOnlyRootFilesystem"), "read-only-root", "policy"),
    ("overlays/cpu", "verifier egress NetworkPolicy dropped",
     lambda o: o.remove(_obj(o, "NetworkPolicy", "rlvr-verifier-egress")), "verifier-egress", "policy"),
    ("overlays/cpu", "verifier egress opened to everything",
     lambda o: _obj(o, "NetworkPolicy", "rlvr-verifier-egress")["spec"]["egress"].append({}), "verifier-egress", "policy"),
    ("overlays/cpu", "verifier egress to the learner's port 8080",
     lambda o: _obj(o, "NetworkPolicy", "rlvr-verifier-egress")["spec"]["egress"][0]["ports"].append({"protocol": "TCP", "port": 8080}), "verifier-egress", "policy"),
    ("overlays/cpu", "learner as root",
     lambda o: _container(o, "Job", "rlvr-learner")["securityContext"].update(runAsUser=0), "non-root", "policy"),
    ("overlays/cpu", "verifier may escalate privileges",
     lambda o: _container(o, "Deployment", "rlvr-verifier")["securityContext"].update(allowPrivilegeEscalation=True), "no-escalation", "policy"),
    ("overlays/cpu", "verifier keeps its capabilities",
     lambda o: _container(o, "Deployment", "rlvr-verifier")["securityContext"].update(capabilities={}), "drop-all", "policy"),
    ("overlays/cpu", "actor pod unconfined",
     lambda o: _obj(o, "Deployment", "rlvr-actor")["spec"]["template"]["spec"]["securityContext"].update(seccompProfile={"type": "Unconfined"}), "seccomp", "policy"),
    ("overlays/cpu", "redis without a memory limit",
     lambda o: _drop_key(_container(o, "StatefulSet", "rlvr-redis"), "resources", "limits", "memory"), "resources", "policy"),
    ("overlays/cpu", "actor without a liveness probe",
     lambda o: _drop_key(_container(o, "Deployment", "rlvr-actor"), "livenessProbe"), "probes", "policy"),
    ("overlays/cpu", "actor readiness on /healthz",
     lambda o: _container(o, "Deployment", "rlvr-actor")["readinessProbe"]["httpGet"].update(path="/healthz"), "probes", "policy"),
    ("overlays/cpu", "verifier probes a port it does not serve",
     lambda o: _container(o, "Deployment", "rlvr-verifier")["livenessProbe"]["httpGet"].update(port=9999), "probes", "policy"),
    ("overlays/cpu", "actor with service links",
     lambda o: _drop_key(_obj(o, "Deployment", "rlvr-actor")["spec"]["template"]["spec"], "enableServiceLinks"), "service-links", "policy"),
    ("overlays/cpu", "actor dials a Redis port no Service has",
     lambda o: _container(o, "Deployment", "rlvr-actor")["args"].__setitem__(2, "redis://rlvr-redis:6380"), "refs", "policy"),
    ("overlays/cpu", "verifier of another run",
     lambda o: _container(o, "Deployment", "rlvr-verifier")["args"].__setitem__(4, "other"), "refs", "policy"),
    ("overlays/cpu", "Redis without its append-only file",
     lambda o: _container(o, "StatefulSet", "rlvr-redis")["args"].__setitem__(1, "no"), "redis-aof", "policy"),
    ("overlays/cpu", "learner that restarts after it finished",
     lambda o: _obj(o, "Job", "rlvr-learner")["spec"]["template"]["spec"].update(restartPolicy="Never"), "learner-job", "policy"),
    ("overlays/gpu", "GPU actor without nvidia.com/gpu",
     lambda o: _drop_key(_container(o, "Deployment", "rlvr-actor"), "resources", "limits", "nvidia.com/gpu"), "gpu", "policy"),
    ("overlays/cpu-keda", "KEDA trigger on the stream name without its hash tag",
     lambda o: _obj(o, "ScaledObject", "rlvr-verifier")["spec"]["triggers"][0]["metadata"].update(stream="rlvr:default:rollouts"), "keda", "policy"),
    ("overlays/cpu-keda", "HPA and ScaledObject on the verifiers",
     lambda o: o.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x", "namespace": "rlvr"},
                         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rlvr-verifier"}, "maxReplicas": 2}}), "autoscaling", "policy"),
    ("overlays/cpu", "misspelt container field",
     lambda o: _container(o, "Job", "rlvr-learner").update(imagePullPolcy="Always"), "schema", "schema"),
    ("overlays/cpu-keda", "misspelt ScaledObject field",
     lambda o: _obj(o, "ScaledObject", "rlvr-verifier")["spec"].update(minReplicaCont=1), "schema", "schema"),
    ("overlays/cpu-keda", "ScaledObject trigger metadata not a string",
     lambda o: _obj(o, "ScaledObject", "rlvr-verifier")["spec"]["triggers"][0]["metadata"].update(lagCount=8), "schema", "schema"),
    ("overlays/cpu-keda", "misspelt ScaledObject metadata field",
     lambda o: _obj(o, "ScaledObject", "rlvr-verifier")["metadata"].update(lables={}), "schema", "schema"),
]


def self_test(rendered: dict[str, Rendered], kube_version: str, crds: CustomResourceSchemas) -> list[str]:
    failures = []
    for overlay, what, mutate, rule, layer in MUTATIONS:
        if overlay not in rendered:
            failures.append(f"self-test: no overlay {overlay} to mutate ({what})")
            continue
        objs = copy.deepcopy(rendered[overlay].objs)
        try:
            mutate(objs)
        except (LookupError, KeyError, IndexError) as e:
            failures.append(f"self-test: cannot apply '{what}' to {overlay}: {e}")
            continue
        findings = Findings()
        if layer == "schema":
            check_schemas(overlay, objs, kube_version, crds, findings)
        else:
            check_policy(Rendered(overlay, objs), findings)
        if rule not in findings.rules():
            failures.append(f"self-test: '{what}' in {overlay} went unreported (expected a [{rule}] finding; got {findings.items or 'none'})")
    return failures


# ---------------------------------------------------------------------------------------------------
# 4 and 5. The real binaries


def clean_env(extra: dict[str, str], home: str) -> dict[str, str]:
    """Nothing of the caller's environment but PATH: no stray RLVR_ settings."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "LC_ALL": "C.UTF-8", **extra}


def run_binary(argv: list[str], env: dict[str, str], cwd: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=PARSE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {PARSE_TIMEOUT_S} s")


def check_plan(rlvr: str, configs: list[tuple[str, str]], workdir: str, findings: Findings) -> list[str]:
    """`rlvr plan` on every distinct run config; a config with an unknown field must be refused."""
    notes = []
    seen: dict[str, str] = {}
    for where, text in configs:
        if text in seen:
            continue
        seen[text] = where
        path = Path(workdir) / f"run-{len(seen)}.toml"
        path.write_text(text)
        # In an empty directory: the model path is the container's, which does not exist here; plan
        # must validate the config anyway and report what it cannot measure as unknown.
        run = run_binary([rlvr, "plan", str(path)], clean_env({}, workdir), workdir)
        if run.returncode != 0 or "config valid" not in run.stdout:
            findings.add(where, "rlvr-plan", f"`rlvr plan` exited {run.returncode}: {(run.stderr or run.stdout).strip()}")
            continue
        unknown = [line.strip() for line in run.stdout.splitlines() if "unknown:" in line]
        shared = sum(1 for _, t in configs if t == text)
        notes.append(
            f"{where} (the same in {shared} render(s)): `rlvr plan` exit 0, {len(run.stdout.splitlines()) - 1} quantities, "
            f"{len(unknown)} unknown without the model here; with an unknown field: refused"
        )
        bad = Path(workdir) / "bad.toml"
        bad.write_text("no_such_field_for_check = 1\n" + text)
        run = run_binary([rlvr, "plan", str(bad)], clean_env({}, workdir), workdir)
        if run.returncode == 0:
            findings.add(where, "rlvr-plan", "`rlvr plan` accepted a config with an unknown field: the check cannot fail")
    return notes


def honours_parse_only(binary: str, name: str, workdir: str) -> str | None:
    """None when `binary` parses only under RLVR_PARSE_ONLY; else why not. Asked with a command that
    is harmless either way, before any container's command line (which would start a service)."""
    probe = ["plan", "/nonexistent/run.toml"] if name == "rlvr" else ["check", "--threads", "1"]
    expect = "Plan(" if name == "rlvr" else "Check {"
    run = run_binary([binary, *probe], clean_env({"RLVR_PARSE_ONLY": "1"}, workdir), workdir)
    if run.returncode == 0 and expect in run.stdout:
        return None
    return f"`{name} {' '.join(probe)}` with RLVR_PARSE_ONLY=1 did not print the parsed command (exit {run.returncode}); built before RLVR_PARSE_ONLY?"


def check_arguments(binaries: dict[str, str], rendered: dict[str, Rendered], workdir: str, findings: Findings) -> list[str]:
    notes, skipped, parsed = [], set(), 0
    unusable = False
    for name, binary in binaries.items():
        why = honours_parse_only(binary, name, workdir)
        if why:
            findings.add(f"--{name} {binary}", "parse-only", why)
            unusable = True
    if unusable:
        return notes
    bad_flag_checked = set()
    for r in rendered.values():
        for pod in pods_of(r.objs):
            for c in pod.containers():
                at = f"{r.name}: {pod.where} container {c['name']}"
                name = binary_of(c)
                if name not in binaries:
                    skipped.add(f"{name or image_name(c)} ({c['name']})")
                    continue
                argv = [binaries[name], *(c.get("command") or [])[1:], *(c.get("args") or [])]
                env = clean_env({**env_values(c), "RLVR_PARSE_ONLY": "1"}, workdir)
                run = run_binary(argv, env, workdir)
                if run.returncode != 0:
                    why = " ".join(line.strip() for line in run.stderr.splitlines() if line.strip().startswith(("error:", "tip:"))) or run.stderr.strip()
                    findings.add(at, "args", f"`{name}` refused its command line (exit {run.returncode}): {why}")
                    continue
                parsed += 1
                if name not in bad_flag_checked:
                    bad_flag_checked.add(name)
                    run = run_binary([*argv, "--no-such-flag-for-check"], env, workdir)
                    if run.returncode != 2:
                        findings.add(at, "args", f"`{name}` with an unknown flag exited {run.returncode}, not 2: the check cannot fail")
    notes.append(f"{parsed} container command lines parsed by the real binaries ({', '.join(sorted(binaries))}); an unknown flag refused (exit 2) by each")
    if skipped:
        notes.append(f"not parsed (not an rlvr binary): {', '.join(sorted(skipped))}")
    return notes


# ---------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rlvr", help="the rlvr binary (e.g. target/debug/rlvr)")
    parser.add_argument("--rlvr-verifier", help="the rlvr-verifier binary (e.g. target/debug/rlvr-verifier)")
    parser.add_argument("--no-binaries", action="store_true", help="skip steps 4 and 5 (rlvr plan, argument parsing)")
    parser.add_argument("--kube-version", default=DEFAULT_KUBE_VERSION, help=f"Kubernetes version of the schemas (default {DEFAULT_KUBE_VERSION})")
    parser.add_argument("--kubectl", default="kubectl", help="kubectl to render with (default: kubectl on PATH)")
    args = parser.parse_args()
    binaries = {}
    if not args.no_binaries:
        for name, path in (("rlvr", args.rlvr), ("rlvr-verifier", args.rlvr_verifier)):
            if not path:
                parser.error(f"--{name} PATH is required (or --no-binaries to skip steps 4 and 5)")
            if not os.access(path, os.X_OK):
                parser.error(f"--{name} {path}: not an executable file (cargo build --bin {name})")
            binaries[name] = str(Path(path).resolve())
    kubectl = shutil.which(args.kubectl)
    if kubectl is None:
        print(f"check_k8s: {args.kubectl} not found on PATH: install kubectl (it renders the kustomizations)", file=sys.stderr)
        return 1

    shipped = sorted({kv_utils.major_minor(v) for v in kv_utils.all_versions()}, key=kv_utils.Version)
    if args.kube_version not in shipped:
        parser.error(f"--kube-version {args.kube_version}: kubernetes-validate {kubernetes_validate.__version__} has schemas for {', '.join(shipped[-8:])} (and older)")
    findings, summary = Findings(), []
    # 1. Render.
    rendered = {name: Rendered(name, render(kubectl, d)) for name, d in render_dirs().items()}
    summary.append(f"rendered {len(rendered)} kustomizations with kubectl kustomize: " + ", ".join(f"{n} ({len(r.objs)} objects)" for n, r in rendered.items()))
    # 2. Schemas.
    crds = CustomResourceSchemas.load(args.kube_version)
    kinds = set()
    for r in rendered.values():
        check_schemas(r.name, r.objs, args.kube_version, crds, findings)
        kinds |= {o["kind"] for o in r.objs}
    custom = sorted({k for (_, k) in crds.schemas} & kinds)
    summary.append(f"schemas: every object valid, strict (Kubernetes {args.kube_version} via kubernetes-validate {kubernetes_validate.__version__}; {', '.join(custom) or 'no custom resources'} against k8s/schemas/ CRDs)")
    # 3. Policy.
    for r in rendered.values():
        check_policy(r, findings)
    containers = sum(len(p.containers()) for r in rendered.values() for p in pods_of(r.objs))
    summary.append(f"policy: {containers} containers in {len(rendered)} renders: restricted security context, read-only root, /tmp, requests+limits, probes, service links, references, learner Job, Redis AOF, verifier egress, GPUs, autoscalers")
    failures = self_test(rendered, args.kube_version, crds)
    summary.append(f"self-test: {len(MUTATIONS)} mutations of the rendered objects, {len(MUTATIONS) - len(failures)} reported as violations")
    # 4, 5. The binaries.
    if binaries:
        with tempfile.TemporaryDirectory(prefix="check-k8s-") as workdir:
            configs = [c for r in rendered.values() for c in r.run_configs]
            if not configs:
                findings.add("all renders", "run-config", "no learner with a mounted run config was found")
            summary += check_plan(binaries["rlvr"], configs, workdir, findings)
            summary += check_arguments(binaries, rendered, workdir, findings)
    elif not binaries:
        summary.append("skipped (--no-binaries): `rlvr plan` of the run config, argument parsing by the real binaries")

    problems = findings.items + failures
    if problems:
        print(f"check_k8s: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print("check_k8s: ok")
    for line in summary:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
