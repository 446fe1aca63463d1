"""deploy/: the compose and Kubernetes examples parse, and the ConfigMap's manifests load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.manifests.loader import load_catalog
from gateway.settings import Settings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def _docs(name: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((DEPLOY / name).read_text()))


def test_configmap_manifests_load(tmp_path: Path) -> None:
    """Every manifest in the ConfigMap example is valid against the repository's actions."""
    (configmap,) = _docs("k8s/configmap.yaml")
    root = tmp_path / "manifests"
    root.mkdir()
    for name, text in configmap["data"].items():
        (root / name).write_text(text)
    catalog = load_catalog(root, gateway_root=DEPLOY.parent)
    assert set(catalog.assistants) == {"support"}
    assert "create_ticket" in catalog.actions


def test_git_sync_link_is_where_the_gateway_looks() -> None:
    """The gateway's GATEWAY_MANIFESTS lies under git-sync's root/link, on a shared volume."""
    deployment, service = _docs("k8s/deployment.yaml")
    assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    sync_env = {e["name"]: e.get("value") for e in containers["git-sync"]["env"]}
    gateway_env = {e["name"]: e.get("value") for e in containers["gateway"]["env"]}
    link = f"{sync_env['GITSYNC_ROOT']}/{sync_env['GITSYNC_LINK']}/"
    assert gateway_env["GATEWAY_MANIFESTS"].startswith(link)
    mounts = {m["mountPath"]: m["name"] for m in containers["gateway"]["volumeMounts"]}
    assert mounts[sync_env["GITSYNC_ROOT"]] == "git"


def test_compose_runs_the_gateway_on_postgres() -> None:
    """The compose file points the gateway's thread store at its PostgreSQL service."""
    (compose,) = _docs("docker-compose.yml")
    gateway = compose["services"]["gateway"]
    assert gateway["environment"]["GATEWAY_DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in gateway["environment"]["GATEWAY_DATABASE_URL"]
    assert gateway["depends_on"]["postgres"]["condition"] == "service_healthy"


def _seconds(value: str | int) -> int:
    return int(str(value).removesuffix("s"))


def test_kubernetes_gives_a_pod_time_to_drain() -> None:
    """A rollout neither routes requests to a closed port (preStop wait while the Service
    drops the pod) nor kills the gateway mid-drain (grace >= wait + drain + 10 s to close),
    and a slow start-up (PostgreSQL wait, 30 s) is not taken for a dead process."""
    deployment, _service = _docs("k8s/deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    gateway = {c["name"]: c for c in pod["containers"]}["gateway"]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    drain = float(env.get("GATEWAY_DRAIN_SECONDS", Settings().drain_seconds))
    command = gateway["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= int(command[1]) + drain + 10
    startup = gateway["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] > 30


def test_compose_gives_the_gateway_time_to_drain() -> None:
    """`docker compose stop` waits longer than the drain plus closing (Docker's 10 s did not)."""
    (compose,) = _docs("docker-compose.yml")
    gateway = compose["services"]["gateway"]
    drain = float(gateway["environment"].get("GATEWAY_DRAIN_SECONDS", Settings().drain_seconds))
    assert _seconds(gateway["stop_grace_period"]) >= drain + 10


def test_the_image_runs_the_gateway_under_an_init_that_reaps_orphans() -> None:
    """The gateway reaps only its own children: as a container's PID 1 it would keep the
    zombies of call processes orphaned by a zygote an action killed. tini is PID 1 and
    the gateway its child (signals pass through)."""
    dockerfile = (DEPLOY.parent / "Dockerfile").read_text()
    assert "apt-get install -y --no-install-recommends tini" in dockerfile
    entrypoints = [line for line in dockerfile.splitlines() if line.startswith("ENTRYPOINT")]
    assert entrypoints == ['ENTRYPOINT ["/usr/bin/tini", "--"]']
    [cmd] = [line for line in dockerfile.splitlines() if line.startswith("CMD")]
    assert "gateway" in cmd and "serve" in cmd
