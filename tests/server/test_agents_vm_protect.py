"""A VM protected through the server (`protect --policy P --server`, in
process over two server apps and a real qemu-storage-daemon): node A's cycle
commits the cluster's VM point with the protect record, and registers the
VM's retention as the cluster's forget schedule (hosts = the cluster); node
B's next cycle continues from A's point sending only the changed blocks; a
machine in no cluster is refused before anything starts, in one line."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from strongroom.config import Settings
from strongroom.errors import UsageError
from strongroom.model.kinds import PointKind
from strongroom.protect.policy import Policy, PolicySource, Retention, SourceKind
from strongroom.protect.source_points import PROTECT_TAG
from strongroom.remote.client import Client
from strongroom.remote.config import AgentConfig, RepositoryInfo
from strongroom.remote.store import RemoteStore
from strongroom.server import create_app
from strongroom.server.agent_api import agent_routes
from strongroom.server.agent_jobs_api import agent_jobs_routes
from strongroom.services.accounts import Accounts
from strongroom.services.agent_jobs import AgentJobs
from strongroom.services.agent_retention import schedule_name
from strongroom.services.agents import Agents
from strongroom.services.dashboard import RepositoryView
from strongroom.services.protect_service import AgentTarget, CycleOutcome, run_service
from tests.helpers.cli import PASSWORD
from tests.helpers.images import touched
from tests.server.conftest import accounts  # noqa: F401 (fixture)
from tests.server.test_agents_vms import (  # noqa: F401 (fixtures)
    BS,
    CHANGES,
    VM,
    Nodes,
    catalog_url,
    nodes,
    pair,
    run_dir,
    site,
)
from tests.vms.conftest import QEMU

pytestmark = QEMU

POLICY = Policy(
    "vms",
    [PolicySource("vm-one", SourceKind.VM, VM)],
    retention=Retention(keep_last=3),
)


@pytest.fixture
def full(nodes: Nodes, accounts: Accounts) -> Iterator[Nodes]:  # noqa: F811
    """`nodes` whose router also reaches "full": an app with the agents' job
    and retention routes (the pair's apps have the agent routes only)."""
    catalog = accounts.catalog
    view = RepositoryView(str(nodes.site.repo_path), PASSWORD.encode())
    app = create_app(
        accounts,
        lambda: [],
        routers=[
            agent_routes(Agents(catalog), nodes.site.intake),
            agent_jobs_routes(Agents(catalog), AgentJobs.over(catalog, view)),
        ],
    )
    with TestClient(app, base_url="http://full") as client:
        nodes.router.apps["full"] = client
        nodes.router.uploads["full"] = 0
        yield nodes


def _store(nodes: Nodes, node: str) -> RemoteStore:  # noqa: F811
    creds = nodes.creds[node]
    text = f"{creds['agent_id']}.{creds['secret']}"
    client = Client(["http://full"], text, http=httpx.Client(transport=nodes.router))
    return RemoteStore(client, RepositoryInfo.from_doc(creds["repository"]))


def _target(nodes: Nodes, node: str, stores: list[RemoteStore]) -> AgentTarget:  # noqa: F811
    creds = nodes.creds[node]

    @contextmanager
    def open_agent() -> Iterator[tuple[AgentConfig, RemoteStore]]:
        info = RepositoryInfo.from_doc(creds["repository"])
        config = AgentConfig(["http://full"], node, creds["agent_id"], creds["secret"], info)
        store = _store(nodes, node)
        stores.append(store)
        try:
            yield config, store
        finally:
            store.close()

    return AgentTarget(open_agent)


def _cycle(nodes: Nodes, node: str, tmp: Any) -> tuple[CycleOutcome, RemoteStore]:  # noqa: F811
    settings = Settings(vms={VM: nodes.spec})
    done: list[CycleOutcome] = []
    stores: list[RemoteStore] = []

    def unused() -> Any:
        raise AssertionError("through a server no local repository is opened")

    run_service(
        settings,
        [POLICY],
        unused,
        threading.Event(),
        done.append,
        max_cycles=1,
        agent=_target(nodes, node, stores),
        state_folder=lambda name: str(tmp / node / name),
    )
    (outcome,) = done
    assert outcome.error == "", outcome.error
    return outcome, stores[-1]


def test_a_vm_protected_through_the_server_by_two_nodes(
    full: Nodes,
    accounts: Accounts,  # noqa: F811
    tmp_path: Any,
) -> None:
    first, _ = _cycle(full, "node-a", tmp_path)
    point = first.point
    assert point is not None and point.kind == PointKind.VM and point.host == "prod"
    assert PROTECT_TAG in point.tags and point.summary["protect"]["name"] == "vm-one"
    schedule = accounts.catalog.find_schedule(schedule_name("cluster:prod", "vm-one"))
    assert schedule is not None and schedule.kind == "forget", schedule
    assert schedule.spec["hosts"] == ["prod"] and schedule.spec["paths"] == [f"vm:{VM}"]
    assert schedule.spec["keep_last"] == 3

    for disk, extents in CHANGES.items():
        full.daemon.write(disk, *(f"write -P {p} {o} {n}" for o, n, p in extents))
    second, store = _cycle(full, "node-b", tmp_path)
    assert second.point is not None and second.point.parent == point.id
    changed = {disk: touched([(o, n) for o, n, _ in ext], BS) for disk, ext in CHANGES.items()}
    blocks = sum(map(len, changed.values()))
    # the changed blocks, and at most each disk's map segment and root and the manifest
    assert blocks <= store.traffic.missing <= blocks + 2 * 2 + 1, store.traffic
    assert store.stats.chunks_added == store.traffic.missing
    assert not second.full


def test_a_machine_in_no_cluster_is_refused_before_anything_starts(
    full: Nodes, tmp_path: Any
) -> None:
    with pytest.raises(
        UsageError, match="policy vms: vm:vm1: this machine is in no cluster"
    ) as err:
        _cycle(full, "node-c", tmp_path)
    assert "\n" not in str(err.value)
    listed = full.api("node-c", "GET", "/api/v1/agent/points").json()
    assert listed == []
