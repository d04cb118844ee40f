"""A stand-in for the parts of Kubernetes that cannot run here: it turns the pod template of a
Job in deploy/mirror-job.yaml into a `docker run` of the same container in a real Docker engine.

What it follows, from the Kubernetes API reference (core/v1 Container, EnvVar, Volume;
batch/v1 Job) and the Job controller's documented behaviour:
- the environment: `envFrom` sources in order (later ones win), then `env` (wins over
  `envFrom`), `fieldRef` for `metadata.labels['job-name']`, and `JOB_COMPLETION_INDEX`, which
  the Job controller adds to every container of an Indexed Job;
- `$(VAR)` references in `args`, `command` and env values are expanded from that environment;
  `$$` is an escaped `$`; a reference to an undefined variable stays as written;
- volumes: a configMap or secret becomes a directory of its keys (`items` pick and rename),
  a persistentVolumeClaim a shared directory writable by `fsGroup`, an emptyDir a directory
  that lives as long as the pod (so it survives a container restart, as in a pod);
- the security context (user, group, fsGroup, read-only root, dropped capabilities, no new
  privileges) and `resources.limits.memory`.
The test's engine has no bridge, so every pod uses the host network (loopback only).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS = {
    None: 1,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion of a command, an argument or an env value."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REF.sub(one, text)


def quantity_bytes(text: str) -> int:
    """`512Mi` → 536870912 (the binary and decimal suffixes of resource quantities)."""
    m = _QUANTITY.match(str(text))
    if not m:
        raise ValueError(f"unsupported quantity {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def pod_spec(job: Mapping[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Job or of a CronJob's job template."""
    spec = job["spec"]
    if job["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def container_env(
    container: Mapping[str, Any],
    job_name: str,
    index: int,
    config_maps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """The container's environment as the kubelet builds it for pod `index` of the Job."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref, store = (
            (source["configMapRef"], config_maps)
            if "configMapRef" in source
            else (source["secretRef"], secrets)
        )
        data = store.get(ref["name"])
        if data is None:
            if ref.get("optional"):
                continue
            raise KeyError(f"envFrom {ref['name']} does not exist")
        env.update(
            {k: str(v) for k, v in data.items() if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)}
        )
    labels = {
        "job-name": job_name,
        "batch.kubernetes.io/job-name": job_name,
        "batch.kubernetes.io/job-completion-index": str(index),
    }
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(str(var["value"]), env)
            continue
        field = var["valueFrom"]["fieldRef"]["fieldPath"]
        m = re.fullmatch(r"metadata\.labels\['([^']+)'\]", field)
        if not m or m.group(1) not in labels:
            raise ValueError(f"fieldRef {field} is not emulated here")
        env[var["name"]] = labels[m.group(1)]
    env["JOB_COMPLETION_INDEX"] = str(index)
    return env


def make_volumes(
    spec: Mapping[str, Any],
    pod_dir: Path,
    config_maps: Mapping[str, Any],
    secrets: Mapping[str, Any],
    claims: Mapping[str, Path],
) -> dict[str, Path]:
    """A host directory per volume of the pod: name → path."""
    group = int(spec.get("securityContext", {}).get("fsGroup", 0))
    out: dict[str, Path] = {}
    for vol in spec.get("volumes", []):
        name = vol["name"]
        if "persistentVolumeClaim" in vol:
            path = claims[vol["persistentVolumeClaim"]["claimName"]]
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, 0, group)  # what fsGroup does to a volume: group-owned,
            path.chmod(0o2775)  # group-writable, setgid
        elif "emptyDir" in vol:
            path = pod_dir / name
            path.mkdir(parents=True)
            path.chmod(0o1777)
        else:
            kind, key = ("configMap", "name") if "configMap" in vol else ("secret", "secretName")
            ref = vol[kind]
            data = (config_maps if kind == "configMap" else secrets).get(ref[key])
            path = pod_dir / name
            path.mkdir(parents=True)
            if data is None and not ref.get("optional"):
                raise KeyError(f"volume {name}: {kind} {ref[key]} does not exist")
            items = ref.get("items") or [{"key": k, "path": k} for k in (data or {})]
            for item in items:
                if data is not None and item["key"] in data:
                    target = path / item["path"]
                    target.write_text(data[item["key"]])
                    target.chmod(0o644)
            path.chmod(0o755)
        out[name] = path
    return out


def docker_run_args(
    spec: Mapping[str, Any],
    container: Mapping[str, Any],
    image: str,
    env: Mapping[str, str],
    volumes: Mapping[str, Path],
) -> list[str]:
    """`docker create` arguments (after the subcommand) for the container as the pod runs it."""
    pod_sc = spec.get("securityContext", {})
    sc = {**pod_sc, **container.get("securityContext", {})}
    args = ["--network", "host", "--user", f"{sc['runAsUser']}:{sc.get('runAsGroup', 0)}"]
    if "fsGroup" in pod_sc:
        args += ["--group-add", str(pod_sc["fsGroup"])]
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    for cap in sc.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    limit = container.get("resources", {}).get("limits", {}).get("memory")
    if limit:
        args += [
            "--memory",
            str(quantity_bytes(limit)),
            "--memory-swap",
            str(quantity_bytes(limit)),
        ]
    for name, value in env.items():
        args += ["-e", f"{name}={value}"]
    for mount in container.get("volumeMounts", []):
        ro = ":ro" if mount.get("readOnly") else ""
        args += ["-v", f"{volumes[mount['name']]}:{mount['mountPath']}{ro}"]
    if container.get("command"):
        args += ["--entrypoint", expand(container["command"][0], env)]
    args.append(image)
    args += [expand(c, env) for c in container.get("command", [])[1:]]
    args += [expand(a, env) for a in container.get("args", [])]
    return args
