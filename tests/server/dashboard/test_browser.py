"""The dashboard in a real browser: Debian's chromium driven by Playwright
(no browser download), against a real `strongroom server` process over a
repository made by the real CLI (two points) and a virtual media library in
the catalog. Every request the pages make is recorded; one that leaves the
server's origin is aborted and fails the test. Screenshots of each page go
to $STRONGROOM_TEST_ARTIFACTS/dashboard (default: the module's tmp folder).

One server and one browser for the module; each test has its own context
(cookies)."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers.cli import FAST_KDF, PASSWORD, run_cli, strongroom_command
from tests.server.dashboard.conftest import OPERATOR_PASSWORD, READER_PASSWORD, make_tree
from tests.server.test_server_process import _free_port, _wait_up

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
# one worker runs the module: one server, one browser, tests in order
pytestmark = pytest.mark.xdist_group("dashboard-browser")
CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):  # pragma: no cover
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Server:
    base: str
    point: str  # the newest point
    source: Path
    files: dict[str, bytes]
    artifacts: Path


def _cli(env: dict[str, str], *args: str) -> Any:
    result = run_cli(list(args), env)
    assert result.rc == 0, result.err
    return result


def _library(env: dict[str, str]) -> None:
    _cli(env, "library", "create", "lib1", "--slots", "4", "--cartridges", "2")
    _cli(env, "library", "inventory", "lib1")
    _cli(env, "library", "transfer", "lib1", "1", "4")
    (Path(env["XDG_DATA_HOME"]) / "strongroom" / "libraries" / "lib1" / "moved").touch()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("dashboard")
    env = browser_env(tmp)
    home = tmp / "home"
    source = tmp / "src"
    files = make_tree(source)
    # a virtual library whose cartridges the catalog knows, then one moved
    # behind the catalog's back: the dashboard's inventory must find it
    # (beside the backups: the catalog and the repository are apart)
    library = threading.Thread(target=_library, args=(env,))
    library.start()
    _cli(env, "init")
    _cli(env, "backup", str(source), "--tag", "first")
    (source / "a.txt").write_bytes(b"changed for the second point\n")
    files["a.txt"] = b"changed for the second point\n"
    point = _cli(env, "backup", str(source), "--tag", "second", "--json").summary()["point_id"]
    library.join()
    assert (home / "data" / "strongroom" / "libraries" / "lib1" / "moved").exists()

    with running_server(env, tmp) as base:
        artifacts = Path(os.environ.get("STRONGROOM_TEST_ARTIFACTS") or tmp) / "dashboard"
        artifacts.mkdir(parents=True, exist_ok=True)
        yield Server(base, point, source, files, artifacts)


def browser_env(tmp: Path) -> dict[str, str]:
    """The environment of the CLI runs and the server of one browser module."""
    home = tmp / "home"
    home.mkdir()
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "STRONGROOM_KDF": FAST_KDF,
        "STRONGROOM_PASSWORD": PASSWORD,
        "STRONGROOM_REPO": str(tmp / "repo"),
        "STRONGROOM_CATALOG": str(tmp / "catalog.sqlite"),
    }


@contextmanager
def running_server(env: dict[str, str], tmp: Path) -> Iterator[str]:
    """A real `strongroom server` process over `env`'s repository and catalog, with the
    users olga (operator), rita (read-only) and ada (administrator); its base URL.
    Stopped with SIGTERM at the end, which it must answer with exit code 0."""
    base = f"http://127.0.0.1:{_free_port()}"
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*strongroom_command(), "server", "--listen", base.removeprefix("http://")],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_up(proc, base, log)
        printed = re.search(r"shown only now\): (\S+)", log.read_text())
        assert printed is not None, log.read_text()
        with httpx.Client(base_url=base) as http:
            signed = http.post("/api/v1/session", json={"name": "admin", "password": printed[1]})
            csrf = {"X-CSRF-Token": signed.json()["csrf_token"]}
            for name, password, role in [
                ("olga", OPERATOR_PASSWORD, "operator"),
                ("rita", READER_PASSWORD, "read-only"),
                ("ada", "administrator pw 1", "administrator"),
            ]:
                made = http.post(
                    "/api/v1/users",
                    json={"name": name, "password": password, "role": role},
                    headers=csrf,
                )
                assert made.status_code == 201, made.text
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Tab:
    page: Any
    server: Server
    seen: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def go(self, path: str) -> None:
        self.page.goto(self.server.base + path)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.server.artifacts / f"{name}.png"), full_page=True)

    def sign_in(self, name: str, password: str) -> None:
        self.go("/signin")
        self.page.fill("#name", name)
        self.page.fill("#password", password)
        self.page.click("#signin")


@pytest.fixture
def tab(browser: Any, server: Server) -> Iterator[Tab]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1200, "height": 800})
    page = context.new_page()
    tab = Tab(page, server)
    origin = urlsplit(server.base)

    def confine(route: Any) -> None:
        url = route.request.url
        tab.seen.append(url)
        where = urlsplit(url)
        if (where.scheme, where.netloc) != (origin.scheme, origin.netloc):
            tab.foreign.append(url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", confine)
    try:
        yield tab
    finally:
        context.close()
    assert tab.foreign == [], f"requests outside the server: {tab.foreign}"
    assert any(u.endswith("/static/htmx.min.js") for u in tab.seen)


def _archive_files(data: bytes, fmt: str, base: str) -> dict[str, bytes]:
    strip = len(base.lstrip("/")) + 1
    if fmt == "tar":
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            return {
                m.name[strip:]: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers()
                if m.isfile()
            }
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n[strip:]: zf.read(n) for n in zf.namelist() if not n.endswith("/")}


def test_an_operator_signs_in_browses_a_point_and_downloads_picked_files(tab: Tab) -> None:
    page, server = tab.page, tab.server
    tab.sign_in("olga", "not the password")
    expect(page.locator("#signin-error")).to_have_text("wrong name or password")
    tab.shot("signin-error")
    tab.sign_in("olga", OPERATOR_PASSWORD)
    page.wait_for_url(server.base + "/")
    assert page.locator("#me").inner_text() == "olga (operator)"
    row = page.locator("tr.source")
    assert row.count() == 1 and "ok" in row.locator(".health").inner_text()
    assert page.locator("svg.timeline rect.bar").count() == 2
    tab.shot("overview")

    page.click("text=Points")
    page.wait_for_url(server.base + "/points")
    expect(page.locator("tr.point")).to_have_count(2)
    tab.shot("points")
    page.click(f"a[href='/points/{server.point}']")
    expect(page.locator("#point-id")).to_have_text(server.point)

    src = str(server.source)
    tab.go(f"/points/{server.point}?path={src}")
    page.click("tr.entry[data-name='sub'] a.open")  # htmx swaps the folder in place
    page.wait_for_url(f"**/points/{server.point}?path={src}/sub")
    expect(page.locator("#folder-path")).to_have_text(f"{src}/sub")
    expect(page.locator("tr.entry[data-name='b.bin']")).to_have_count(1)
    tab.shot("point-folder")
    page.click("#up")
    page.wait_for_url(f"**/points/{server.point}?path={src}")
    expect(page.locator("#folder-path")).to_have_text(src)
    page.check("tr.entry[data-name='a.txt'] input[type=checkbox]")
    page.check("tr.entry[data-name='sub'] input[type=checkbox]")
    with page.expect_download() as got:
        page.click("#download")
    data = Path(got.value.path()).read_bytes()
    want = {k: v for k, v in server.files.items() if k != "empty"}
    assert _archive_files(data, "tar", src) == want

    page.click("tr.entry[data-name='sub'] a.open")
    page.wait_for_url(f"**path={src}/sub")
    expect(page.locator("#folder-path")).to_have_text(f"{src}/sub")
    page.check("tr.entry[data-name='b.bin'] input[type=checkbox]")
    page.select_option("#format", "zip")
    with page.expect_download() as got:
        page.click("#download")
    zipped = _archive_files(Path(got.value.path()).read_bytes(), "zip", src)
    assert zipped == {"sub/b.bin": server.files["sub/b.bin"]}


def test_an_operator_runs_an_inventory_and_sees_the_slots_move(tab: Tab) -> None:
    page = tab.page
    tab.sign_in("olga", OPERATOR_PASSWORD)
    page.wait_for_url(tab.server.base + "/")
    tab.go("/libraries")
    moved = page.locator("#library-lib1 tr.medium[data-barcode='VT0001L8'] td.slot")
    assert moved.inner_text() == "1"  # what the catalog last saw
    tab.shot("libraries-before")
    page.click("#library-lib1 button.inventory")
    expect(moved).to_have_text("4")
    assert "2 known" in page.locator("#library-lib1 .inventory-report").inner_text()
    tab.shot("libraries-after-inventory")
    tab.go("/events")
    assert page.locator("tr.event").count() >= 1
    tab.shot("events")


def test_a_reader_sees_no_actions_and_forged_posts_are_refused(tab: Tab) -> None:
    page, server = tab.page, tab.server
    tab.sign_in("rita", READER_PASSWORD)
    page.wait_for_url(server.base + "/")
    assert page.locator("a[href='/users']").count() == 0
    tab.go(f"/points/{server.point}?path={server.source}")
    assert page.locator("#download").count() == 0
    assert page.locator("input[type=checkbox]").count() == 0
    tab.go("/libraries")
    assert page.locator("button.inventory").count() == 0
    tab.shot("libraries-read-only")
    csrf = page.locator("form.signout input[name=csrf_token]").get_attribute("value")
    form = {"csrf_token": csrf, "format": "tar", "path": f"{server.source}/a.txt"}
    download = page.request.post(f"{server.base}/points/{server.point}/download", form=form)
    assert download.status == 403
    inventory = page.request.post(f"{server.base}/libraries/lib1/inventory", form=form)
    assert inventory.status == 403
    tab.go("/users")
    expect(page.locator("#error")).to_have_text("administrators only")
    tab.shot("users-refused")


def test_an_administrator_manages_users_reads_the_audit_log_and_signs_out(tab: Tab) -> None:
    page, server = tab.page, tab.server
    tab.sign_in("ada", "administrator pw 1")
    page.wait_for_url(server.base + "/")
    page.click("text=Users")
    page.wait_for_url(server.base + "/users")
    rita = page.locator("tr.user[data-name='rita']")
    rita.locator("select[name=role]").select_option("operator")
    rita.locator("button:has-text('Set role')").click()
    expect(page.locator("#notice")).to_have_text("user rita changed")
    expect(rita.locator(".role")).to_have_text("operator")
    tab.shot("users")
    page.click("text=Audit")
    page.wait_for_url(server.base + "/audit")
    audit = page.locator("#audit").inner_text()
    assert "user.change" in audit and "points.download" in audit and "denied" in audit
    tab.shot("audit")
    page.click("#signout")
    page.wait_for_url(server.base + "/signin")
    tab.go("/")
    assert page.url == server.base + "/signin"


def test_the_jobs_page_follows_a_job_to_its_end(tab: Tab) -> None:
    page = tab.page
    tab.sign_in("olga", OPERATOR_PASSWORD)
    page.wait_for_url(tab.server.base + "/")
    tab.go("/jobs")
    csrf = page.request.get(tab.server.base + "/api/v1/me").json()["csrf_token"]
    made = page.request.post(tab.server.base + "/api/v1/jobs", data={"kind": "prune"},
                             headers={"X-CSRF-Token": csrf})  # fmt: skip
    assert made.status == 201
    state = page.locator(f"tr.job[data-job='{made.json()['id']}'] td.state")
    expect(state).to_have_text("done", timeout=20_000)  # the rows refresh every 2 s
    tab.shot("jobs")
