"""The dashboard's Schedules page, in process over test_machines.py's site
(a real repository, a real SQLite catalog, web1 enrolled): who sees the
form (administrators only, as the API's schedules), each kind made from the
form with an interval or a calendar time and stored with the API's checked
spec, the list with the next run, pause, resume and delete, refusals in one
line with audit rows. The form's translation alone is unit-tested at the end."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from strongroom.catalog import Pool, Schedule
from strongroom.errors import UsageError
from strongroom.services.agents import Agents
from strongroom.services.dashboard_schedules import read_schedule, read_when, when_text
from tests.server.dashboard.conftest import (
    ADMIN_PASSWORD,
    OPERATOR_PASSWORD,
    READER_PASSWORD,
    Site,
    sign_in,
)
from tests.server.dashboard.test_machines import _audit, msite  # noqa: F401 (a fixture)

WEEKLY = {"when": "calendar", "day": "sun", "time": "02:30"}
HOURLY = {"when": "every", "every_count": "2", "every_unit": "hours"}


def test_readers_and_operators_see_the_schedules_but_no_form(msite: Site) -> None:  # noqa: F811
    c = msite.client
    for name, password in (("rita", READER_PASSWORD), ("olga", OPERATOR_PASSWORD)):
        csrf = sign_in(c, name, password)
        page = c.get("/schedules")
        assert page.status_code == 200 and 'id="no-schedules"' in page.text
        assert 'href="/schedules"' in page.text and "new-schedule" not in page.text
        form = {"csrf_token": csrf, "name": "x", "what": "prune", **HOURLY}
        assert c.post("/schedules", data=form).status_code == 403
        assert c.post("/schedules/x/delete", data={"csrf_token": csrf}).status_code == 403
        assert c.get("/schedules/fields?what=image").status_code == 403
        assert ("POST /schedules", "denied", name) in _audit(msite)
    assert msite.accounts.catalog.list_schedules() == []


def test_an_administrator_schedules_every_kind_and_pauses_resumes_deletes(
    msite: Site,  # noqa: F811
) -> None:
    c, catalog = msite.client, msite.accounts.catalog
    csrf = sign_in(c, "admin", ADMIN_PASSWORD)
    page = c.get("/schedules").text
    assert 'id="new-schedule"' in page and 'id="fields-files"' in page
    assert 'hx-get="/schedules/fields"' in page and '<option value="web1">' in page
    image = c.get("/schedules/fields?what=image", headers={"HX-Request": "true"}).text
    assert 'id="fields-image"' in image and 'name="scratch"' in image and "<html" not in image
    assert c.get("/schedules/fields?what=nope").status_code == 400

    def make(name: str, fields: dict[str, str]) -> int:
        return c.post("/schedules", data={"csrf_token": csrf, "name": name, **fields}).status_code

    files = {"what": "files", "machine": "web1", "paths": "/srv\r\n\r\n /etc \r\n",
             "excludes": "*.tmp", "tags": "nightly, web", "one_file_system": "on"}  # fmt: skip
    assert make("web1-weekly", {**files, **WEEKLY}) == 303
    disk = {"what": "image", "machine": "web1", "source": "nbd+unix:///vda?socket=/run/n.sock",
            "qmp": "/run/qmp.sock", "scratch": "/var/tmp/ov", "changed_since": "bitmap",
            "bitmap": "nightly", "node": ""}  # fmt: skip
    assert make("web1-disk", {**disk, **HOURLY}) == 303
    keep = {"what": "forget", "keep_daily": "7", "keep_weekly": "4", "hosts": "web1",
            "group_by": "host,paths", "prune": "on"}  # fmt: skip
    assert make("keep-web1", {**keep, "when": "calendar", "day": "daily", "time": "03:15"}) == 303
    assert make("prune", {"what": "prune", "max_unused": "25", "when": "every",
                          "every_count": "90", "every_unit": "minutes"}) == 303  # fmt: skip
    tape = {"what": "copy", "pool": "nightly", "hosts": "web1", **WEEKLY}
    assert make("tape", {**tape, "pool": ""}) == 400
    catalog.add_pool(Pool("nightly"))
    assert '<option value="nightly">' in c.get("/schedules/fields?what=copy").text
    assert make("tape", tape) == 303

    made = {s.name: s for s in catalog.list_schedules()}
    weekly = made["web1-weekly"]
    assert (weekly.kind, weekly.machine, weekly.calendar, weekly.every_seconds) == (
        "backup", "web1", "weekly sun 02:30", None)  # fmt: skip
    assert weekly.spec == {"kind": "files", "paths": ["/srv", "/etc"], "excludes": ["*.tmp"],
                           "tags": ["nightly", "web"], "one_file_system": True}  # fmt: skip
    assert weekly.next_due.weekday() == 6 and weekly.next_due.strftime("%H:%M") == "02:30"
    assert made["web1-disk"].every_seconds == 7200
    assert made["web1-disk"].spec == {
        "kind": "image", "source": disk["source"], "changed_since": "bitmap:nightly",
        "tags": [], "qmp": "/run/qmp.sock", "scratch": "/var/tmp/ov"}  # fmt: skip
    assert (made["keep-web1"].kind, made["keep-web1"].machine) == ("forget", None)
    assert made["keep-web1"].spec["keep_daily"] == 7 and made["keep-web1"].spec["prune"] is True
    assert made["keep-web1"].spec["hosts"] == ["web1"] and made["keep-web1"].calendar == (
        "daily 03:15")  # fmt: skip
    assert (made["prune"].spec, made["prune"].every_seconds) == ({"max_unused": 0.25}, 5400)
    assert (made["tape"].kind, made["tape"].machine) == ("copy-to-media", None)
    assert made["tape"].spec == {"pool": "nightly", "library": None, "points": [],
                                 "latest": True, "hosts": ["web1"], "paths": []}  # fmt: skip

    listed = c.get("/schedules").text
    row = listed.split('data-name="web1-disk"')[1].split("</tr>")[0]
    assert "every 2 h" in row and "image backup of nbd+unix:///vda" in row
    due = made["web1-disk"].next_due.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert f'<td class="next">{due}</td>' in row and ">on<" in row
    assert "sun 02:30 UTC" in listed and "every 90 min" in listed
    assert "forget keeping daily 7, weekly 4 then prune" in listed
    assert "copy the newest points to pool nightly" in listed

    # refusals: one line each, nothing stored, an audit row
    for name, fields, line in [
        ("web1-weekly", {**files, **WEEKLY}, "a schedule of that name exists"),
        ("a", {**files, "paths": "srv", **WEEKLY}, "absolute path"),
        ("a", {**files, "when": "calendar", "day": "sun", "time": "25:00"}, "HH:MM"),
        ("a", {**files, "when": "calendar", "day": "someday", "time": "02:00"}, "mon..sun"),
        ("a", {**files, "every_count": "0", "every_unit": "hours"}, "at least 1"),
        ("a", {**files, "every_count": "1", "every_unit": "weeks"}, "minutes, hours or days"),
        ("a", {**files, "every_count": "-1"}, "whole number"),
        ("a", {**files, "machine": "", **HOURLY}, "choose the machine"),
        ("a", {**files, "machine": "db9", **HOURLY}, "no such enrolled"),
        ("a", {"what": "vm", "machine": "web1", "vm": "vm1", **HOURLY}, "in no VM cluster"),
        ("a", {**keep, "keep_daily": "0", "keep_weekly": "0", **HOURLY}, "keep"),
        ("a", {"what": "prune", "max_unused": "101", **HOURLY}, "0 to 100"),
        ("a", {"what": "restore", **HOURLY}, "choose what to schedule"),
        ("a b", {"what": "prune", **HOURLY}, "a schedule name is"),
        ("a\0b", {"what": "prune", **HOURLY}, "a schedule name is"),
    ]:
        answer = c.post("/schedules", data={"csrf_token": csrf, "name": name, **fields})
        assert answer.status_code in (400, 409), (fields, answer.text)
        assert line in answer.text, (line, answer.text)
    assert len(catalog.list_schedules()) == 5
    assert all("\0" not in a.target for a in catalog.list_audit(limit=100))
    assert ("schedule.create", "failed", "admin") in _audit(msite)
    assert ("schedule.create", "ok", "admin") in _audit(msite)

    # a machine of a cluster takes a VM schedule
    Agents(catalog).set_cluster("web1", "prod")
    vm = {"what": "vm", "machine": "web1", "vm": "vm1", "changed_since": "compare",
          "when": "every", "every_count": "1", "every_unit": "days"}  # fmt: skip
    assert make("vm1-daily", vm) == 303
    assert catalog.get_schedule("vm1-daily").spec == {
        "kind": "vm", "vm": "vm1", "changed_since": "compare", "tags": []}  # fmt: skip

    # pause, resume, delete
    act = {"csrf_token": csrf}
    assert c.post("/schedules/web1-disk/pause", data=act).status_code == 303
    assert catalog.get_schedule("web1-disk").enabled is False
    paused = c.get("/schedules").text.split('data-name="web1-disk"')[1].split("</tr>")[0]
    assert ">paused<" in paused and 'class="resume"' in paused
    assert c.post("/schedules/web1-disk/resume", data=act).status_code == 303
    assert catalog.get_schedule("web1-disk").enabled is True
    assert c.post("/schedules/prune/delete", data=act).status_code == 303
    assert catalog.find_schedule("prune") is None
    assert c.post("/schedules/prune/delete", data=act).status_code == 404
    assert c.post("/schedules/web1-disk/explode", data=act).status_code == 404
    assert c.post("/schedules/web1-disk/pause", data={"x": "1"}).status_code == 403  # no CSRF
    audit = _audit(msite)
    assert ("schedule.change", "ok", "admin") in audit
    assert ("schedule.remove", "ok", "admin") in audit


def test_the_forms_time_is_read_into_the_schedulers_terms() -> None:
    assert read_when({"when": ["every"], "every_count": ["3"], "every_unit": ["days"]}) == (
        3 * 86400, None)  # fmt: skip
    assert read_when({"when": ["calendar"], "day": ["daily"], "time": ["00:00"]}) == (
        None, "daily 00:00")  # fmt: skip
    with pytest.raises(UsageError, match="whole number"):
        read_when({"every_count": ["1" * 20]})
    asked = read_schedule({"what": ["image"], "machine": ["m1"], "source": ["/dev/vdb"],
                           "allow_backing": ["on"], "every_count": ["1"]})  # fmt: skip
    assert asked.spec == {"kind": "image", "source": "/dev/vdb", "changed_since": "auto",
                          "tags": [], "allow_backing": True}  # fmt: skip
    assert asked.every == 3600 and asked.calendar is None
    with pytest.raises(UsageError, match="with 'changed since: bitmap' only"):
        read_schedule({"what": ["image"], "machine": ["m1"], "bitmap": ["b"], "every_count": ["1"]})
    now = datetime.now(UTC)
    for every, text in ((7200, "every 2 h"), (5400, "every 90 min"), (86400, "every 1 d"),
                        (61, "every 61 s")):  # fmt: skip
        assert when_text(Schedule("s", "prune", now, every_seconds=every)) == text
