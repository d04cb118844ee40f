"""deploy/mirror-job.yaml: valid against the Kubernetes API's schemas (kubernetes-validate,
which carries the OpenAPI-derived JSON schemas of each release), and consistent with itself,
with the image (deploy/Containerfile) and with occystrap's options. The pods themselves run in
tests/functional/test_deploy.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from occystrap.cli import cli
from tests import kubelet

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCS = list(yaml.safe_load_all((DEPLOY / "mirror-job.yaml").read_text()))
BY_NAME = {f"{d['kind']}/{d['metadata']['name']}": d for d in DOCS}
JOBS = [BY_NAME["Job/occystrap-mirror"], BY_NAME["CronJob/occystrap-mirror-nightly"]]
# The oldest release whose schemas the package carries, and the newest.
VERSIONS = sorted({"1.27.0", kubernetes_validate.latest_version()})


def _job_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("doc", DOCS, ids=list(BY_NAME))
def test_valid_against_the_kubernetes_schema(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)  # raises, saying where


def test_the_validator_does_catch_mistakes() -> None:
    bad = yaml.safe_load(yaml.safe_dump(JOBS[0]))
    bad["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("doc", JOBS, ids=["Job", "CronJob"])
def test_an_indexed_job_of_n_shards(doc: dict[str, Any]) -> None:
    spec = _job_spec(doc)
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"]
    pod = kubelet.pod_spec(doc)
    assert pod["restartPolicy"] == "OnFailure"
    args = pod["containers"][0]["args"]
    shard = [a for a in args if a.startswith("--shard=")]
    assert shard == [f"--shard=$(JOB_COMPLETION_INDEX)/{spec['completions']}"]
    stats_file = next(a for a in args if a.startswith("--stats-file="))
    assert "$(JOB_NAME)" in stats_file and "$(JOB_COMPLETION_INDEX)" in stats_file


def test_the_cronjob_runs_the_same_pods_as_the_job() -> None:
    job, cron = JOBS
    assert kubelet.pod_spec(job) == kubelet.pod_spec(cron)
    keys = ("completionMode", "completions", "parallelism", "backoffLimit")
    assert {k: job["spec"][k] for k in keys} == {k: _job_spec(cron)[k] for k in keys}


def test_every_reference_is_defined() -> None:
    """A `$(VAR)` the pod does not define stays literal in Kubernetes: a silent bug."""
    container = kubelet.pod_spec(JOBS[0])["containers"][0]
    settings = BY_NAME["ConfigMap/occystrap-mirror-settings"]["data"]
    defined = {*settings, *(e["name"] for e in container["env"]), "JOB_COMPLETION_INDEX"}
    refs = {r for a in container["args"] for r in re.findall(r"\$\((\w+)\)", a)}
    assert refs and refs <= defined, refs - defined
    names = {v["name"] for v in kubelet.pod_spec(JOBS[0])["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} == names
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in kubelet.pod_spec(JOBS[0])["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert (
        claims == {"occystrap-mirror-stats"} and "PersistentVolumeClaim/" + claims.pop() in BY_NAME
    )
    for kind in ("ConfigMap/occystrap-mirror-images", "ConfigMap/occystrap-mirror-settings"):
        assert kind in BY_NAME


def test_settings_are_occystrap_options() -> None:
    """Every OCCYSTRAP_* key of the settings ConfigMap is a variable occystrap reads."""
    known = set(
        re.findall(
            r"OCCYSTRAP_[A-Z_]+", CliRunner().invoke(cli, ["--help"], terminal_width=200).output
        )
    )
    settings = BY_NAME["ConfigMap/occystrap-mirror-settings"]["data"]
    used = {k for k in settings if k.startswith("OCCYSTRAP_")}
    assert used and used <= known, used - known
    assert all(isinstance(v, str) for v in settings.values())


def test_pods_run_as_the_image_user_with_bounded_memory() -> None:
    user = re.search(r"^USER (\d+):(\d+)$", (DEPLOY / "Containerfile").read_text(), re.M)
    assert user
    pod = kubelet.pod_spec(JOBS[0])
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] and (sc["runAsUser"], sc["runAsGroup"]) == tuple(
        map(int, user.groups())
    )
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp", "/stats", "/config"}
    res = container["resources"]
    request = kubelet.quantity_bytes(res["requests"]["memory"])
    limit = kubelet.quantity_bytes(res["limits"]["memory"])
    assert 0 < request <= limit
