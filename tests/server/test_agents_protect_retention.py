"""The retention an agent registers for a protected source
(POST /api/v1/agent/retention, services/agent_retention.py), in process over
a real catalog: it becomes ONE forget schedule of the machine's points
(upserted), hostile or empty rules are refused in one line, and the agent's
credentials can neither queue a forget nor reach the schedules."""

from __future__ import annotations

from typing import Any

import pytest

from strongroom.errors import UsageError
from strongroom.protect.policy import Policy, PolicySource, SourceKind
from strongroom.services.agent_retention import schedule_name
from strongroom.services.protect_service import check_through_server
from tests.server.conftest import ADMIN_PASSWORD
from tests.server.test_agent_jobs import JobSite, jsite  # noqa: F401

GOOD: dict[str, Any] = {"source": "t", "path": "/srv/data", "every": 5, "keep_last": 3,
                        "hourly": 24, "keep_within": 3600}  # fmt: skip


def test_registration_is_an_upserted_forget_schedule_of_the_machine(
    jsite: JobSite,  # noqa: F811
) -> None:
    agent = jsite.enroll("web-1")
    first = jsite.app_client.post("/api/v1/agent/retention", json=GOOD, headers=agent)
    assert first.status_code == 200, first.text
    doc = first.json()
    assert doc["name"] == schedule_name("web-1", "t") and doc["kind"] == "forget"
    assert doc["machine"] is None and doc["every"] == 60  # clamped to the scheduler's minimum
    spec = doc["spec"]
    assert spec["hosts"] == ["web-1"] and spec["paths"] == ["/srv/data"]
    assert spec["tags"] == ["protect"] and spec["group_by"] == "host,paths"
    assert (spec["keep_last"], spec["keep_hourly"], spec["keep_within"]) == (3, 24, 3600)
    again = jsite.app_client.post(
        "/api/v1/agent/retention", json={**GOOD, "keep_last": 7, "hourly": 0}, headers=agent
    )
    assert again.status_code == 200 and again.json()["spec"]["keep_last"] == 7
    csrf = jsite.session("admin", ADMIN_PASSWORD)
    listed = jsite.app_client.get("/api/v1/schedules", headers=csrf).json()
    names = [s["name"] for s in (listed if isinstance(listed, list) else listed["schedules"])]
    assert names.count(doc["name"]) == 1 and len(names) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"keep_last": 0, "hourly": 0, "keep_within": 0},  # keeps nothing
        {"path": "relative/../x"},
        {"path": "volume:relative"},
        {"path": "/a\0b"},
        {"source": "../x"},
        {"keep_last": 10**6},
        {"keep_tags": ["x"]},  # keep rules of a policy only
    ],
)
def test_hostile_or_empty_rules_are_refused_in_one_line(
    jsite: JobSite,  # noqa: F811
    change: dict[str, Any],
) -> None:
    agent = jsite.enroll("web-1")
    answer = jsite.app_client.post(
        "/api/v1/agent/retention", json={**GOOD, **change}, headers=agent
    )
    assert answer.status_code in (400, 422), answer.text
    assert "Traceback" not in answer.text and "\0" not in answer.text
    if answer.status_code == 400:
        assert "\n" not in answer.json()["error"]


def test_agent_credentials_cannot_forget_or_see_schedules(jsite: JobSite) -> None:  # noqa: F811
    agent = jsite.enroll("web-1")
    spec = {"keep_last": 1, "hosts": ["web-1"]}
    assert jsite.app_client.post(
        "/api/v1/jobs", json={"kind": "forget", "spec": spec}, headers=agent
    ).status_code in (401, 403)
    assert jsite.app_client.get("/api/v1/schedules", headers=agent).status_code in (401, 403)
    unsigned = jsite.app_client.post("/api/v1/agent/retention", json=GOOD)
    assert unsigned.status_code == 401


def test_a_vm_source_s_retention_is_its_cluster_s_schedule(
    jsite: JobSite,  # noqa: F811
) -> None:
    """A VM's points are its cluster's: the schedule thins hosts = [cluster],
    is named after the cluster and shared by its nodes; a machine in no
    cluster, or a VM name that is no name, is refused in one line."""
    a, b = jsite.enroll("node-a"), jsite.enroll("node-b")
    vm = {**GOOD, "source": "vm-one", "path": "vm:vm1"}
    refused = jsite.app_client.post("/api/v1/agent/retention", json=vm, headers=a)
    assert refused.status_code == 400 and "VM cluster" in refused.json()["error"]
    csrf = jsite.session("admin", ADMIN_PASSWORD)
    for node in ("node-a", "node-b"):
        put = jsite.app_client.put(
            f"/api/v1/machines/{node}/cluster", json={"cluster": "prod"}, headers=csrf
        )
        assert put.status_code == 200, put.text
    first = jsite.app_client.post("/api/v1/agent/retention", json=vm, headers=a)
    assert first.status_code == 200, first.text
    doc = first.json()
    assert doc["name"] == schedule_name("cluster:prod", "vm-one")
    assert doc["spec"]["hosts"] == ["prod"] and doc["spec"]["paths"] == ["vm:vm1"]
    second = jsite.app_client.post(
        "/api/v1/agent/retention", json={**vm, "keep_last": 9}, headers=b
    )
    assert second.status_code == 200 and second.json()["name"] == doc["name"]
    assert second.json()["spec"]["keep_last"] == 9  # one schedule, the last rules
    for path in ("vm:", "vm:../x", "vm:a/b", "vm:" + "x" * 65):
        bad = jsite.app_client.post("/api/v1/agent/retention", json={**vm, "path": path}, headers=a)
        assert bad.status_code == 400 and "\n" not in bad.json()["error"], path


def test_a_vm_source_needs_the_machine_in_a_cluster_before_anything_starts() -> None:
    trees = Policy(
        "ok",
        [PolicySource("t", SourceKind.TREE, "/srv/data"),
         PolicySource("v", SourceKind.VOLUME, "/srv/vol.qcow2")],
    )  # fmt: skip
    chain = Policy("c", [PolicySource("c", SourceKind.VOLUME, "/srv/v")], "/mnt/chain")
    asked: list[str] = []

    def no_cluster() -> str:
        asked.append("?")
        raise UsageError("this machine is in no cluster")

    check_through_server([trees, chain], no_cluster)  # a VHD chain is the machine's to write
    assert asked == []  # no VM source: the server is not asked
    vm = Policy("p", [PolicySource("m", SourceKind.VM, "web")])
    with pytest.raises(UsageError, match="policy p: vm:web: this machine is in no cluster") as err:
        check_through_server([trees, vm], no_cluster)
    assert "\n" not in str(err.value)
    check_through_server([trees, vm], lambda: "prod")
