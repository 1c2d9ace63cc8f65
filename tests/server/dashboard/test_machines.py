"""The dashboard's Machines and Jobs pages and "Restore to the agent", in
process over a real repository (one files point of host web1) and a real
SQLite catalog where web1 is an enrolled machine: what each role sees and
may do (refusals are 403 with an audit row), the jobs queued with checked
specs, the live jobs partial, an enrollment token shown once."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from strongroom.catalog import Catalog
from strongroom.config import Settings
from strongroom.server import create_app
from strongroom.server.dashboard import add_dashboard_routes
from strongroom.services.accounts import Accounts, Role
from strongroom.services.agent_jobs import AgentJobs
from strongroom.services.agents import Agents
from strongroom.services.backup import BackupRequest, backup_files
from strongroom.services.dashboard import RepositoryView
from tests.conftest import init_local_repository, open_local_repository
from tests.helpers.cli import PASSWORD
from tests.server.conftest import FAST_HASHER
from tests.server.dashboard.conftest import (
    ADMIN_PASSWORD,
    OPERATOR_PASSWORD,
    READER_PASSWORD,
    Site,
    make_tree,
    sign_in,
)


@pytest.fixture
def msite(tmp_path: Path) -> Iterator[Site]:
    repo_path = tmp_path / "repo"
    init_local_repository(repo_path)
    source = tmp_path / "src"
    files = make_tree(source)
    repo = open_local_repository(repo_path)
    try:
        made = backup_files(repo, BackupRequest(paths=[str(source)], host="web1"))
        assert made.point is not None
    finally:
        repo.close()
    catalog = Catalog.open(str(tmp_path / "catalog.sqlite"))
    accounts = Accounts(catalog, hasher=FAST_HASHER)
    accounts.ensure_administrator(lambda: ADMIN_PASSWORD)
    accounts.create_user("olga", OPERATOR_PASSWORD, Role.OPERATOR)
    accounts.create_user("rita", READER_PASSWORD, Role.READ_ONLY)
    agents = Agents(catalog)
    assert agents.enroll(agents.create_enrollment("web1")[0]) is not None
    view = RepositoryView(str(repo_path), PASSWORD.encode(), ttl=0)
    dashboard = functools.partial(add_dashboard_routes, view=view, settings=Settings(),
                                  agent_jobs=AgentJobs.over(catalog, view))  # fmt: skip
    app = create_app(accounts, lambda: [], routers=[dashboard])
    try:
        with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
            yield Site(client, accounts, made.point.id, source, files)
    finally:
        catalog.close()


def _audit(site: Site) -> list[tuple[str, str, str | None]]:
    return [(a.action, a.outcome, a.user) for a in site.accounts.catalog.list_audit(limit=50)]


def test_machines_page_and_back_up_now_by_role(msite: Site) -> None:
    c = msite.client
    sign_in(c, "rita", READER_PASSWORD)
    page = c.get("/machines")
    assert page.status_code == 200 and 'data-machine="web1"' in page.text
    assert '<span class="health ok">ok</span>' in page.text
    assert "Back up now" not in page.text and "Enroll a machine" not in page.text
    refused = c.post("/machines/web1/backup", data={"csrf_token": c.get("/api/v1/me").json()[
        "csrf_token"]})  # fmt: skip
    assert refused.status_code == 403
    assert ("POST /machines/web1/backup", "denied", "rita") in _audit(msite)

    csrf = sign_in(c, "olga", OPERATOR_PASSWORD)
    assert "Back up now" in c.get("/machines").text
    assert c.post("/machines/web1/backup", data={"x": "1"}).status_code == 403  # no CSRF
    done = c.post("/machines/web1/backup", data={"csrf_token": csrf})
    assert done.status_code == 303 and done.headers["location"] == "/jobs"
    (job,) = msite.accounts.catalog.list_jobs()
    assert (job.kind, job.machine, job.spec["paths"]) == ("backup", "web1", [str(msite.source)])
    assert ("job.create", "ok", "olga") in _audit(msite)
    assert c.post("/machines/nobody/backup", data={"csrf_token": csrf}).status_code == 404
    assert c.post("/machines/enrollments", data={"csrf_token": csrf,
                                                 "machine": "x"}).status_code == 403  # fmt: skip


def test_an_administrator_makes_an_enrollment_token_shown_once(msite: Site) -> None:
    csrf = sign_in(msite.client, "admin", ADMIN_PASSWORD)
    made = msite.client.post("/machines/enrollments", data={"csrf_token": csrf, "machine": "db-2"})
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    token = made.text.split('<code id="enrollment-token">')[1].split("<")[0]
    assert Agents(msite.accounts.catalog).enroll(token) is not None
    assert token not in str(msite.accounts.catalog.list_audit(limit=50))
    bad = msite.client.post("/machines/enrollments", data={"csrf_token": csrf, "machine": "../x"})
    assert bad.status_code == 400
    assert ("enrollment.create", "ok", "admin") in _audit(msite)


def test_jobs_page_shows_live_progress(msite: Site) -> None:
    catalog = msite.accounts.catalog
    jobs = AgentJobs(catalog, lambda _p: None, lambda _p, _q: None)  # type: ignore[arg-type,return-value]
    job = jobs.jobs.enqueue("backup", {"paths": ["/srv"]}, machine="web1")
    sign_in(msite.client, "rita", READER_PASSWORD)
    page = msite.client.get("/jobs")
    assert 'hx-get="/jobs/rows" hx-trigger="every 2s"' in page.text  # the newest page
    assert f'data-job="{job.id}"' in page.text and ">queued<" in page.text
    assert jobs.claim("web1") is not None
    assert jobs.progress("web1", job.id or 0, {"bytes": 512, "bytes_total": 2048, "files": 3})
    rows = msite.client.get("/jobs/rows", headers={"HX-Request": "true"}).text
    assert rows.startswith('<tbody id="job-rows"') and ">running<" in rows
    assert '<progress value="512" max="2048"></progress>' in rows and "3 files" in rows
    jobs.finish("web1", job.id or 0, False, "disk on fire", None)
    rows = msite.client.get("/jobs/rows").text
    assert ">failed<" in rows and "disk on fire" in rows


def test_jobs_page_pages_by_id_and_filters(msite: Site) -> None:
    """100 jobs a page, newest first; `Older` continues below the last id shown (new jobs
    do not shift the pages); state and machine filters; nonsense values show nothing."""
    import re

    catalog = msite.accounts.catalog
    jobs = AgentJobs(catalog, lambda _p: None, lambda _p, _q: None)  # type: ignore[arg-type,return-value]
    made = [jobs.jobs.enqueue("backup", {"paths": ["/srv"]}, machine="web1") for _ in range(130)]
    for job in made[:3]:  # the three oldest fail
        assert jobs.claim("web1") is not None
        jobs.finish("web1", job.id or 0, False, "disk on fire", None)
    sign_in(msite.client, "rita", READER_PASSWORD)

    def ids(html: str) -> list[int]:
        return [int(i) for i in re.findall(r'data-job="(\d+)"', html)]

    first = msite.client.get("/jobs").text
    assert ids(first) == sorted((j.id or 0 for j in made), reverse=True)[:100]
    older = re.search(r'id="jobs-older" href="([^"]+)"', first)
    assert older is not None and 'id="jobs-newest"' not in first
    jobs.jobs.enqueue("backup", {"paths": ["/srv"]}, machine="web1")  # a new one: no shift
    second = msite.client.get(older[1].replace("&amp;", "&")).text
    assert ids(second) == sorted((j.id or 0 for j in made), reverse=True)[100:]
    assert 'id="jobs-older"' not in second and 'id="jobs-newest"' in second
    failed = msite.client.get("/jobs?state=failed").text
    assert sorted(ids(failed)) == sorted(j.id or 0 for j in made[:3])
    assert 'hx-get="/jobs/rows?state=failed"' in failed
    assert ids(msite.client.get("/jobs?machine=web2").text) == []
    for bad in ("/jobs?before=abc", "/jobs?state=melted", "/jobs?before=" + "9" * 40):
        page = msite.client.get(bad)
        assert page.status_code == 200 and ids(page.text) == []


def test_restore_to_the_agent_from_a_points_page(msite: Site) -> None:
    c = msite.client
    sign_in(c, "rita", READER_PASSWORD)
    assert "Restore to the agent" not in c.get(f"/points/{msite.point}").text
    csrf = sign_in(c, "olga", OPERATOR_PASSWORD)
    assert "Restore to the agent" in c.get(f"/points/{msite.point}").text
    picked = f"{msite.source}/sub"
    url = f"/points/{msite.point}/restore"
    done = c.post(url, data={"csrf_token": csrf, "path": [picked], "target": "/restore",
                             "overwrite": "refuse"})  # fmt: skip
    assert done.status_code == 303, done.text
    (job,) = msite.accounts.catalog.list_jobs()
    assert job.machine == "web1" and job.spec == {
        "point": msite.point,
        "paths": [picked],
        "target": "/restore",
        "overwrite": "refuse",
    }
    for bad in ({"target": "relative"}, {"target": "/r", "path": ["/nowhere"]},
                {"target": "/r", "overwrite": "merge"}, {"target": "/r\0"}):  # fmt: skip
        answer = c.post(url, data={"csrf_token": csrf, **bad})
        assert answer.status_code == 400, (bad, answer.text)
    Agents(msite.accounts.catalog).set_disabled("web1", True)
    assert "Restore to the agent" not in c.get(f"/points/{msite.point}").text
    assert c.post(url, data={"csrf_token": csrf, "target": "/r"}).status_code == 409
    assert [j.id for j in msite.accounts.catalog.list_jobs()] == [job.id]


def test_machines_page_shows_a_machine_s_vm_cluster(msite: Site) -> None:
    msite.accounts.catalog.set_machine_cluster("web1", "prod")
    sign_in(msite.client, "rita", READER_PASSWORD)
    page = msite.client.get("/machines")
    assert '<span class="note cluster">(cluster prod)</span>' in page.text


def _vm_point(repo_path: Path, cluster: str) -> str:
    """A VM point of `cluster` with one small disk, made in process (a VM
    backup needs a running QEMU; the dashboard only queues its restore)."""
    from datetime import UTC, datetime

    from strongroom.model.blockmap import BlockMap
    from strongroom.model.kinds import PointKind
    from strongroom.model.vm import VmDisk, VmManifest
    from strongroom.pipeline.blockmaps import save_block_map, save_vm_manifest
    from strongroom.services.recording import record_point

    repo = open_local_repository(repo_path)
    try:
        root = save_block_map(repo, BlockMap.empty(1 << 16, 1 << 16))
        manifest = save_vm_manifest(repo, VmManifest("vm1", [VmDisk("vda", 1 << 16, 1 << 16,
                                                                    root.hex(), {})]))  # fmt: skip
        repo.flush()
        point = record_point(repo, kind=PointKind.VM, time=datetime.now(UTC), host=cluster,
                             paths=["vm:vm1"], tree=manifest.hex(), parent=None,
                             summary={})  # fmt: skip
    finally:
        repo.close()
    return point.id


def test_vm_jobs_from_the_machines_page_and_a_vm_points_page(msite: Site, tmp_path: Path) -> None:
    c, catalog = msite.client, msite.accounts.catalog
    agents = Agents(catalog)
    url = "/machines/web1/backup"
    csrf = sign_in(c, "olga", OPERATOR_PASSWORD)
    assert "backup-vm-now" not in c.get("/machines").text  # in no cluster
    refused = c.post(url, data={"csrf_token": csrf, "vm": "vm1"})
    assert refused.status_code == 400 and "in no VM cluster" in refused.text
    agents.set_cluster("web1", "prod")
    page = c.get("/machines").text
    assert 'class="backup-vm-now"' in page and "schedule-vm" not in page  # an operator's
    assert c.post(url, data={"csrf_token": csrf, "vm": "../x"}).status_code == 400
    assert c.post(url, data={"vm": "vm1"}).status_code == 403  # no CSRF
    assert c.post(url, data={"csrf_token": csrf, "vm": "vm1"}).status_code == 303
    (job,) = catalog.list_jobs()
    assert (job.kind, job.machine) == ("backup", "web1")
    assert job.spec == {"kind": "vm", "vm": "vm1", "changed_since": "auto", "tags": []}
    plan = {"csrf_token": csrf, "vm": "vm1", "schedule": "vm1-hourly", "every_count": "1",
            "every_unit": "hours"}  # fmt: skip
    assert c.post("/machines/web1/schedules", data=plan).status_code == 403

    csrf = sign_in(c, "admin", ADMIN_PASSWORD)
    assert 'class="schedule-vm"' in c.get("/machines").text
    plan["csrf_token"] = csrf
    assert c.post("/machines/web1/schedules", data=plan).status_code == 303
    made = catalog.get_schedule("vm1-hourly")
    assert (made.kind, made.machine, made.every_seconds) == ("backup", "web1", 3600)
    assert made.spec == job.spec
    assert c.post("/machines/web1/schedules", data=plan).status_code == 409
    assert "vm1-hourly: backup every 1 h; next" in c.get("/machines").text
    for bad in ({"every_count": "soon"}, {"every_unit": "s"}, {"vm": "a b"}, {"schedule": ""}):
        answer = c.post("/machines/web1/schedules", data={**plan, **bad})
        assert answer.status_code == 400, (bad, answer.text)
    assert ("schedule.create", "ok", "admin") in _audit(msite)
    assert ("schedule.create", "failed", "admin") in _audit(msite)

    point = _vm_point(tmp_path / "repo", "prod")
    shown = c.get(f"/points/{point}").text
    assert 'id="restore-vm-to-agent"' in shown and '<option value="web1">' in shown
    form = {"csrf_token": csrf, "machine": "web1", "target": "/restore/vm1", "format": "qcow2"}
    assert c.post(f"/points/{point}/restore", data=form).status_code == 303
    restore = next(j for j in catalog.list_jobs() if j.kind == "restore")
    assert restore.machine == "web1" and restore.spec == {
        "point": point, "paths": [], "target": "/restore/vm1", "overwrite": "refuse",
        "kind": "vm", "format": "qcow2"}  # fmt: skip
    for bad in ({"machine": "web2"}, {"format": "vhd"}, {"target": "vm1"}):
        answer = c.post(f"/points/{point}/restore", data={**form, **bad})
        assert answer.status_code in (400, 409), (bad, answer.text)
    assert len([j for j in catalog.list_jobs() if j.kind == "restore"]) == 1
