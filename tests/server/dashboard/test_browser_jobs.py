"""The VM job forms and the Schedules page in a real browser (Debian's chromium
through Playwright), against a real `strongroom server` process: machine
node-a enrolled through the API and put in the VM cluster `prod`, whose VM
point is in the repository. An operator backs the VM up now and restores
its disks to node-a (the jobs' specs read back through the API); an
administrator schedules the VM's backups on the Machines page, then on the
Schedules page a calendar schedule (files, weekly) and an interval schedule
(an image, every 90 minutes, the form's fields swapped by htmx), sees each
with its next run, pauses one and deletes the other; a read-only user sees
the schedules but no form, and a forged post is refused. One server and one
browser for the module; requests confined to the server (test_browser.py's
`tab`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.dashboard.conftest import OPERATOR_PASSWORD, READER_PASSWORD
from tests.server.dashboard.test_browser import (  # noqa: F401 (fixtures used by name)
    Server,
    Tab,
    _cli,
    browser,
    browser_env,
    expect,
    running_server,
    tab,
)
from tests.server.dashboard.test_machines import _vm_point

pytestmark = pytest.mark.xdist_group("dashboard-browser")
ADMIN = ("ada", "administrator pw 1")


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[httpx.Client]:
    """The API as the administrator ada (reads back what the pages queued)."""
    with httpx.Client(base_url=server.base) as http:
        signed = http.post("/api/v1/session", json={"name": ADMIN[0], "password": ADMIN[1]})
        http.headers["X-CSRF-Token"] = signed.json()["csrf_token"]
        yield http


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("dashboard-jobs")
    env = browser_env(tmp)
    _cli(env, "init")
    point = _vm_point(tmp / "repo", "prod")
    with running_server(env, tmp) as base, httpx.Client(base_url=base) as http:
        signed = http.post("/api/v1/session", json={"name": ADMIN[0], "password": ADMIN[1]})
        http.headers["X-CSRF-Token"] = signed.json()["csrf_token"]
        token = http.post("/api/v1/enrollments", json={"machine": "node-a"}).json()["token"]
        assert http.post("/api/v1/agent/enroll", json={"token": token}).status_code == 200
        put = http.put("/api/v1/machines/node-a/cluster", json={"cluster": "prod"})
        assert put.status_code == 200, put.text
        artifacts = Path(os.environ.get("STRONGROOM_TEST_ARTIFACTS") or tmp) / "dashboard"
        artifacts.mkdir(parents=True, exist_ok=True)
        yield Server(base, point, tmp, {}, artifacts)


def _jobs(admin: httpx.Client, kind: str) -> list[dict[str, Any]]:
    return [j for j in admin.get("/api/v1/jobs").json() if j["kind"] == kind]


def _next_run(admin: httpx.Client, name: str) -> str:
    due = datetime.fromisoformat(admin.get(f"/api/v1/schedules/{name}").json()["next_due"])
    return due.strftime("%Y-%m-%d %H:%M:%S")


def test_an_operator_backs_up_a_vm_and_restores_its_disks(
    tab: Tab,  # noqa: F811
    admin: httpx.Client,
) -> None:
    page, server = tab.page, tab.server
    tab.sign_in("olga", OPERATOR_PASSWORD)
    page.wait_for_url(server.base + "/")
    tab.go("/machines")
    row = page.locator("tr.machine[data-machine='node-a']")
    expect(row.locator(".cluster")).to_have_text("(cluster prod)")
    assert row.locator("button.schedule-vm").count() == 0  # an administrator's
    row.locator("input.vm-name").fill("vm1")
    tab.shot("machines-vm")
    row.locator("button.backup-vm-now").click()
    page.wait_for_url(server.base + "/jobs")
    (backup,) = _jobs(admin, "backup")
    expect(page.locator(f"tr.job[data-job='{backup['id']}'] td.state")).to_have_text("queued")
    assert backup["machine"] == "node-a"
    assert backup["spec"] == {"kind": "vm", "vm": "vm1", "changed_since": "auto", "tags": []}

    tab.go(f"/points/{server.point}")
    page.select_option("#restore-vm-machine", "node-a")
    page.fill("#restore-vm-target", "/restore/vm1")
    page.select_option("#restore-vm-format", "qcow2")
    tab.shot("vm-point-restore")
    page.click("#restore-vm-to-agent")
    page.wait_for_url(server.base + "/jobs")
    (restore,) = _jobs(admin, "restore")
    assert restore["machine"] == "node-a" and restore["spec"] == {
        "point": server.point, "paths": [], "target": "/restore/vm1", "overwrite": "refuse",
        "kind": "vm", "format": "qcow2"}  # fmt: skip
    expect(page.locator(f"tr.job[data-job='{restore['id']}']")).to_have_count(1)


def test_an_administrator_schedules_by_calendar_and_interval_and_deletes_one(
    tab: Tab,  # noqa: F811
    admin: httpx.Client,
) -> None:
    page, server = tab.page, tab.server
    tab.sign_in(*ADMIN)
    page.wait_for_url(server.base + "/")
    tab.go("/machines")  # the VM form's schedule
    row = page.locator("tr.machine[data-machine='node-a']")
    row.locator("input.vm-name").fill("vm1")
    row.locator("input.vm-schedule").fill("vm1-hourly")
    row.locator("input.vm-every").fill("2")
    row.locator("button.schedule-vm").click()
    page.wait_for_url(server.base + "/machines")
    expect(row).to_contain_text("vm1-hourly: backup every 2 h")

    page.click("text=Schedules")
    page.wait_for_url(server.base + "/schedules")
    expect(page.locator("tr.schedule[data-name='vm1-hourly'] td.when")).to_have_text("every 2 h")
    # a calendar schedule: the files of node-a every Sunday at 02:30 UTC
    page.fill("#schedule-name", "node-a-weekly")
    page.select_option("#schedule-machine", "node-a")
    page.fill("#schedule-paths", "/srv\n/etc")
    page.fill("#schedule-excludes", "*.tmp")
    page.check("#when-calendar")
    page.select_option("#calendar-day", "sun")
    page.fill("#calendar-time", "02:30")
    page.click("#make-schedule")
    expect(page.locator("#notice")).to_have_text("schedule node-a-weekly made")
    weekly = page.locator("tr.schedule[data-name='node-a-weekly']")
    expect(weekly.locator("td.when")).to_have_text("weekly sun 02:30 UTC")
    expect(weekly.locator("td.next")).to_have_text(_next_run(admin, "node-a-weekly"))
    assert admin.get("/api/v1/schedules/node-a-weekly").json()["spec"]["paths"] == [
        "/srv", "/etc"]  # fmt: skip

    # an interval schedule: a disk image every 90 minutes (htmx swaps the fields)
    page.select_option("#schedule-what", "image")
    expect(page.locator("#fields-image")).to_be_visible()
    assert page.locator("#fields-files").count() == 0
    page.fill("#schedule-name", "db-disk")
    page.fill("#schedule-source", "/var/lib/vm/db.qcow2")
    page.check("#schedule-allow-backing")
    page.fill("#every-count", "90")
    page.select_option("#every-unit", "minutes")
    page.click("#make-schedule")
    expect(page.locator("#notice")).to_have_text("schedule db-disk made")
    disk = page.locator("tr.schedule[data-name='db-disk']")
    expect(disk.locator("td.when")).to_have_text("every 90 min")
    expect(disk.locator("td.next")).to_have_text(_next_run(admin, "db-disk"))
    made = admin.get("/api/v1/schedules/db-disk").json()
    assert (made["every"], made["machine"]) == (5400, "node-a")
    assert made["spec"] == {"kind": "image", "source": "/var/lib/vm/db.qcow2",
                            "changed_since": "auto", "tags": [], "allow_backing": True}  # fmt: skip
    tab.shot("schedules")

    disk.locator("button.pause").click()
    expect(page.locator("tr.schedule[data-name='db-disk'] td.state")).to_have_text("paused")
    assert admin.get("/api/v1/schedules/db-disk").json()["enabled"] is False
    page.locator("tr.schedule[data-name='node-a-weekly'] button.delete").click()
    expect(page.locator("#notice")).to_have_text("schedule node-a-weekly deleted")
    expect(page.locator("tr.schedule[data-name='node-a-weekly']")).to_have_count(0)
    assert admin.get("/api/v1/schedules/node-a-weekly").status_code == 404


def test_a_reader_sees_the_schedules_but_no_form(tab: Tab) -> None:  # noqa: F811
    page, server = tab.page, tab.server
    tab.sign_in("rita", READER_PASSWORD)
    page.wait_for_url(server.base + "/")
    tab.go("/schedules")
    expect(page.locator("tr.schedule[data-name='vm1-hourly']")).to_have_count(1)
    assert page.locator("#new-schedule").count() == 0
    assert page.locator("tr.schedule button").count() == 0
    tab.shot("schedules-read-only")
    tab.go("/machines")
    assert page.locator("button.backup-vm-now").count() == 0
    csrf = page.locator("form.signout input[name=csrf_token]").get_attribute("value")
    forged = page.request.post(f"{server.base}/schedules/vm1-hourly/delete",
                               form={"csrf_token": csrf})  # fmt: skip
    assert forged.status == 403
    tab.go("/schedules")
    expect(page.locator("tr.schedule[data-name='vm1-hourly']")).to_have_count(1)
