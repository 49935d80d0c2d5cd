"""deploy/: the Compose file and the Kubernetes manifests parse, and what they refer to
exists — the image, ports, volume paths, every STEPSTREAM_* name (read by the code),
every command line (parsed by stepstream's own CLI) and the metric workers scale on."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.cli.commands import build_parser, load_app
from topics.settings import KAFKA_ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SOURCES = [p for d in ("engine", "sdk", "topics") for p in (ROOT / d).rglob("*.py")]
IMAGE = "stepstream:0.1.0"


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def containers() -> list[dict[str, Any]]:
    out = []
    for d in manifests():
        spec = d.get("spec", {}).get("template", {}).get("spec", {})
        out += spec.get("containers", [])
    return out


def read_by_code(name: str) -> bool:
    if name in {"STEPSTREAM_" + f.name.upper() for f in fields(Settings)}:
        return True
    if name.startswith(KAFKA_ENV_PREFIX):
        return True  # passed through; librdkafka judges the name (tested elsewhere)
    return any(f'"{name}"' in p.read_text() for p in SOURCES)


def test_every_file_parses_and_every_object_has_a_kind_and_name() -> None:
    docs = manifests()
    assert {d["kind"] for d in docs} >= {"ConfigMap", "Secret", "Job", "StatefulSet",
                                          "Service", "Deployment", "ScaledObject"}
    assert all(d["metadata"]["name"] for d in docs)
    assert set(compose()["services"]) == {"kafka", "topics", "engine", "worker"}


def test_every_stepstream_variable_named_anywhere_is_one_the_code_reads() -> None:
    text = "\n".join(p.read_text() for p in DEPLOY.rglob("*") if p.is_file())
    names = set(re.findall(r"\bSTEPSTREAM_[A-Z0-9_]+", text))
    assert names, "no settings found"
    unread = sorted(n for n in names if not read_by_code(n))
    assert unread == []


def cli_lines() -> list[list[str]]:
    lines = [c["args"] for c in containers() if c["image"] == IMAGE]
    lines += [s["command"] for s in compose()["services"].values() if "command" in s]
    return lines


@pytest.mark.parametrize("argv", cli_lines(), ids=lambda a: " ".join(a[:2]))
def test_every_command_line_is_one_stepstream_accepts(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)  # exits (status 2) on anything it refuses
    if args.command == "worker":
        import os
        os.chdir(ROOT)  # the image's WORKDIR holds examples/, as the repository does
        assert callable(getattr(load_app(args.app), "worker", None))


def test_one_image_everywhere_at_the_projects_version() -> None:
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version and f"stepstream:{version.group(1)}" == IMAGE
    ours = [c["image"] for c in containers() if "stepstream" in c["image"]]
    assert ours and set(ours) == {IMAGE}
    assert compose()["x-stepstream"]["image"] == IMAGE
    for copied in re.findall(r"^COPY (\S+)", (DEPLOY / "Dockerfile").read_text(), re.M):
        assert (ROOT / copied).exists(), copied


def arg(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_engine_ports_volumes_services_and_peer_urls_agree() -> None:
    [sts] = by_kind("StatefulSet").values()
    [engine] = sts["spec"]["template"]["spec"]["containers"]
    port = int(arg(engine["args"], "--port"))
    assert {p["name"]: p["containerPort"] for p in engine["ports"]} == {"http": port}
    services = by_kind("Service")
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    for svc in services.values():
        assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"][
            "labels"].items()
        assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]
    [mount] = engine["volumeMounts"]
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert mount["name"] == claim["metadata"]["name"]
    assert arg(engine["args"], "--state-dir").startswith(mount["mountPath"] + "/")
    env = {e["name"]: e.get("value") for e in engine["env"]}
    assert env["STEPSTREAM_ADVERTISED_URL"] == (
        f"http://$(POD_NAME).{sts['spec']['serviceName']}:{port}")
    assert engine["readinessProbe"]["httpGet"]["path"] == "/health"

    service = compose()["services"]["engine"]
    assert arg(service["command"], "--port") == "8288" == service["ports"][0].split(":")[-1]
    [volume] = service["volumes"]
    assert arg(service["command"], "--state-dir").startswith(volume.split(":")[1] + "/")
    assert service["environment"]["STEPSTREAM_ADVERTISED_URL"] == "http://engine:8288"


def test_workers_expose_and_scale_on_a_metric_the_engine_serves() -> None:
    [deployment] = by_kind("Deployment").values()
    [worker] = deployment["spec"]["template"]["spec"]["containers"]
    port = int(arg(worker["args"], "--metrics-port"))
    assert worker["ports"] == [{"name": "metrics", "containerPort": port}]
    assert deployment["spec"]["template"]["metadata"]["annotations"][
        "prometheus.io/port"] == str(port)
    [scaled] = by_kind("ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    [trigger] = scaled["spec"]["triggers"]
    metric = re.search(r"stepstream_[a-z_]+", trigger["metadata"]["query"])
    assert metric and any(f'"{metric.group(0)}"' in p.read_text() for p in SOURCES)
    assert trigger["metadata"]["threshold"] == arg(worker["args"], "--concurrency")


def test_config_and_secret_references_resolve() -> None:
    maps, secrets = by_kind("ConfigMap"), by_kind("Secret")
    for c in containers():
        for ref in c.get("envFrom", []):
            if "configMapRef" in ref:
                assert ref["configMapRef"]["name"] in maps
            if "secretRef" in ref:
                assert ref["secretRef"]["name"] in secrets
    settings = {**next(iter(maps.values()))["data"]}
    assert int(settings["STEPSTREAM_PARTITIONS"]) >= by_kind("StatefulSet")[
        "stepstream-engine"]["spec"]["replicas"]
