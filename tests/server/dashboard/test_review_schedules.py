"""Review of the dashboard's Schedules page (server/dashboard/schedules.py,
services/dashboard_schedules.py) with hostile form values: a name, machine
or VM longer than any is refused, never cut to another's; a POST without
the session's CSRF token changes nothing; numbers past any calendar are one
refusal, not a server error."""

from __future__ import annotations

from tests.server.dashboard.conftest import ADMIN_PASSWORD, Site, sign_in
from tests.server.dashboard.test_machines import msite  # noqa: F401 (a fixture)

HOURLY = {"when": "every", "every_count": "2", "every_unit": "hours"}
PRUNE = {"what": "prune", "max_unused": "10", **HOURLY}


def test_a_name_longer_than_any_acts_on_no_other_schedule(msite: Site) -> None:  # noqa: F811
    c, catalog = msite.client, msite.accounts.catalog
    csrf = sign_in(c, "admin", ADMIN_PASSWORD)
    kept = "a" * 64
    assert c.post("/schedules", data={"csrf_token": csrf, "name": kept, **PRUNE}).status_code == 303
    for action in ("pause", "delete"):
        answer = c.post(f"/schedules/{kept}b/{action}", data={"csrf_token": csrf})
        assert answer.status_code == 404, action
    (schedule,) = catalog.list_schedules()
    assert schedule.name == kept and schedule.enabled  # neither paused nor deleted
    # nor is a new schedule made under a name cut from the one typed
    made = c.post("/schedules", data={"csrf_token": csrf, "name": "c" * 65, **PRUNE})
    assert made.status_code == 400
    assert [s.name for s in catalog.list_schedules()] == [kept]


def test_a_machine_or_vm_longer_than_any_is_refused_not_cut(msite: Site) -> None:  # noqa: F811
    c, catalog = msite.client, msite.accounts.catalog
    csrf = sign_in(c, "admin", ADMIN_PASSWORD)
    files = {"csrf_token": csrf, "what": "files", "paths": "/srv", **HOURLY}
    answer = c.post("/schedules", data={**files, "name": "f", "machine": "web1" + "x" * 61})
    assert answer.status_code in (400, 404, 422)
    assert catalog.list_schedules() == []


def test_without_the_csrf_token_nothing_changes(msite: Site) -> None:  # noqa: F811
    c, catalog = msite.client, msite.accounts.catalog
    csrf = sign_in(c, "admin", ADMIN_PASSWORD)
    assert c.post("/schedules", data={"csrf_token": csrf, "name": "p", **PRUNE}).status_code == 303
    for token in ("", "x" * 43, csrf[:-1] + ("A" if csrf[-1] != "A" else "B")):
        assert (
            c.post("/schedules", data={"csrf_token": token, "name": "q", **PRUNE}).status_code
            == 403
        )
        assert c.post("/schedules/p/delete", data={"csrf_token": token}).status_code == 403
    assert c.post("/schedules/p/delete", data={"name": "p"}).status_code == 403
    assert [s.name for s in catalog.list_schedules()] == ["p"]


def test_hostile_numbers_and_text_are_one_refusal(msite: Site) -> None:  # noqa: F811
    c, catalog = msite.client, msite.accounts.catalog
    csrf = sign_in(c, "admin", ADMIN_PASSWORD)
    bad = [
        {**PRUNE, "every_count": "999999999", "every_unit": "days"},  # past year 9999
        {**PRUNE, "every_count": "-1"},
        {**PRUNE, "every_count": "1e9"},
        {**PRUNE, "max_unused": "101"},
        {**PRUNE, "when": "calendar", "day": "sun", "time": "24:00"},
        {**PRUNE, "when": "calendar", "day": "sun\x00", "time": "02:00"},
        {**PRUNE, "what": "nope"},
        {"what": "forget", "keep_daily": "99999999999", **HOURLY},
        {"what": "forget", "keep_daily": "1", "group_by": "host;drop", **HOURLY},
    ]
    for n, fields in enumerate(bad):
        answer = c.post("/schedules", data={"csrf_token": csrf, "name": f"s{n}", **fields})
        assert answer.status_code in (400, 422), (fields, answer.status_code)
        assert "Traceback" not in answer.text
    nul = c.post("/schedules", data={"csrf_token": csrf, "name": "x\x00y", **PRUNE})
    assert nul.status_code == 400
    assert catalog.list_schedules() == []


def test_what_a_schedule_names_is_shown_escaped(msite: Site) -> None:  # noqa: F811
    c = msite.client
    csrf = sign_in(c, "admin", ADMIN_PASSWORD)
    files = {"what": "files", "machine": "web1", "paths": "/srv/<script>alert(1)</script>",
             "tags": "<b>t</b>", **HOURLY}  # fmt: skip
    made = c.post("/schedules", data={"csrf_token": csrf, "name": "x", **files})
    assert made.status_code == 303
    page = c.get("/schedules").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page and "<b>t</b>" not in page
    notice = c.get("/schedules", params={"notice": "<img src=x onerror=alert(1)>"}).text
    assert "<img src=x" not in notice
