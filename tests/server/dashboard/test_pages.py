"""The dashboard's HTML routes in process: sign-in, the redirects, CSRF and
role refusals (each an audit row), the security headers, the file browser's
path checks, the streamed tar and zip downloads, users' changes."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from strongroom.catalog import Library, LibraryKind
from strongroom.errors import UsageError
from strongroom.services.dashboard import checked_path
from strongroom.services.libraries import create_virtual_library
from tests.server.dashboard.conftest import (
    ADMIN_PASSWORD,
    OPERATOR_PASSWORD,
    READER_PASSWORD,
    Site,
    sign_in,
)


def _audit(site: Site) -> list[tuple[str, str, str | None]]:
    return [(a.action, a.outcome, a.user) for a in site.accounts.catalog.list_audit(limit=50)]


def test_pages_need_a_session_and_send_the_sign_in_page(site: Site) -> None:
    for url in ("/", "/points", f"/points/{site.point}", "/users", "/libraries", "/audit"):
        answer = site.client.get(url)
        assert answer.status_code == 303 and answer.headers["location"] == "/signin"
    partial = site.client.get(f"/points/{site.point}/folder", headers={"HX-Request": "true"})
    assert partial.status_code == 401 and partial.headers["HX-Redirect"] == "/signin"
    # a forged sign-in (no token from the sign-in page) and a wrong password
    forged = site.client.post("/signin", data={"name": "admin", "password": ADMIN_PASSWORD})
    assert forged.status_code == 403
    page = site.client.get("/signin")
    token = page.text.split('name="signin_token" value="')[1].split('"')[0]
    wrong = site.client.post(
        "/signin", data={"name": "admin", "password": "x" * 12, "signin_token": token}
    )
    assert wrong.status_code == 401 and "wrong name or password" in wrong.text
    assert ("session.create", "failed", None) in _audit(site)
    assert site.client.get("/").status_code == 303


def test_every_answer_has_a_strict_content_security_policy(site: Site) -> None:
    sign_in(site.client, "rita", READER_PASSWORD)
    for url in ("/", "/signin", "/static/htmx.min.js", "/static/dashboard.css", "/nowhere"):
        answer = site.client.get(url)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, url
        assert answer.headers["x-content-type-options"] == "nosniff"
    page = site.client.get("/").text
    assert "<script>" not in page and "style=" not in page and "http" not in page.split("<body")[0]


def _download(site: Site, csrf: str, fmt: str, paths: list[str]) -> bytes:
    data = {"csrf_token": csrf, "format": fmt, "path": paths}
    with site.client.stream("POST", f"/points/{site.point}/download", data=data) as answer:
        assert answer.status_code == 200, answer.read()
        assert "content-length" not in answer.headers  # streamed, not built in memory
        assert "attachment" in answer.headers["content-disposition"]
        return answer.read()


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_an_operator_downloads_picked_files_byte_exactly(site: Site, fmt: str) -> None:
    csrf = sign_in(site.client, "olga", OPERATOR_PASSWORD)
    src = str(site.source)
    body = _download(site, csrf, fmt, [f"{src}/a.txt", f"{src}/sub", f"{src}/sub/b.bin"])
    base = src.lstrip("/")
    if fmt == "tar":
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            names = tar.getnames()
            got = {n[len(base) + 1 :]: tar.extractfile(n).read() for n in names  # type: ignore[union-attr]
                   if tar.getmember(n).isfile()}  # fmt: skip
    else:
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            names = zf.namelist()
            got = {n[len(base) + 1 :]: zf.read(n) for n in names if not n.endswith("/")}
    want = {k: v for k, v in site.files.items() if k != "empty"}
    assert got == want
    assert len(names) == len(set(names))  # b.bin picked twice, archived once
    assert ("points.download", "ok", "olga") in _audit(site)


def test_path_tricks_in_the_browser_are_refused(site: Site) -> None:
    sign_in(site.client, "rita", READER_PASSWORD)
    folder = f"/points/{site.point}/folder"
    for path, status in [
        (f"{site.source}/../../etc", 400),
        ("../x", 400),
        ("relative/path", 400),
        (f"{site.source}/a\0b", 400),
        ("/etc/passwd", 404),
        ("/" + "a" * 5000, 400),
        (f"{site.source}/a.txt", 400),  # a file is not a folder
    ]:
        answer = site.client.get(folder, params={"path": path})
        assert answer.status_code == status, (path, answer.text)
        assert "Traceback" not in answer.text
    assert site.client.get("/points/" + "0" * 64).status_code == 404
    assert site.client.get("/points/../../etc/passwd").status_code == 404
    with pytest.raises(UsageError):
        checked_path("/a/\0")
    assert checked_path("/a//b/./c") == "/a/b/c"


def test_csrf_and_roles_are_enforced_and_audited(site: Site) -> None:
    src = str(site.source)
    reader = sign_in(site.client, "rita", READER_PASSWORD)
    page = site.client.get(f"/points/{site.point}?path={src}").text
    assert 'id="download"' not in page and 'type="checkbox"' not in page
    assert site.client.get("/users").status_code == 403
    libraries = site.client.get("/libraries").text
    assert "Inventory</button>" not in libraries
    forged = {"format": "tar", "path": [f"{src}/a.txt"]}
    url = f"/points/{site.point}/download"
    assert site.client.post(url, data=forged).status_code == 403  # no token
    assert site.client.post(url, data={**forged, "csrf_token": "0" * 64}).status_code == 403
    assert site.client.post(url, data={**forged, "csrf_token": reader}).status_code == 403
    json_body = site.client.post(url, content=b"{}", headers={"X-CSRF-Token": reader})
    assert json_body.status_code == 415
    audit = _audit(site)
    assert ("csrf", "denied", "rita") in audit
    assert (f"POST {url}"[:64], "denied", "rita") in audit  # the action column holds 64

    operator = sign_in(site.client, "olga", OPERATOR_PASSWORD)
    made = {
        "csrf_token": operator,
        "name": "mallory",
        "password": "p" * 12,
        "role": "administrator",
    }
    assert site.client.post("/users", data=made).status_code == 403
    assert site.client.get("/audit").status_code == 403
    assert site.accounts.catalog.find_user("mallory") is None


def test_an_administrator_creates_changes_and_disables_users(site: Site) -> None:
    csrf = sign_in(site.client, "admin", ADMIN_PASSWORD)
    new = {"csrf_token": csrf, "name": "nina", "password": "n" * 12, "role": "read-only"}
    assert site.client.post("/users", data=new).status_code == 303
    assert site.client.post("/users", data=new).status_code == 409
    role = {"csrf_token": csrf, "action": "role", "role": "operator"}
    assert site.client.post("/users/nina", data=role).status_code == 303
    off = {"csrf_token": csrf, "action": "disable"}
    assert site.client.post("/users/nina", data=off).status_code == 303
    nina = site.accounts.catalog.get_user("nina")
    assert str(nina.role) == "operator" and nina.disabled
    assert site.client.post("/users/admin", data=off).status_code == 409  # the last one
    assert site.client.post("/users/nobody", data=off).status_code == 404
    short = {**new, "name": "ola", "password": "short"}
    assert site.client.post("/users", data=short).status_code == 400
    page = site.client.get("/users").text
    assert 'data-name="nina"' in page
    audit = site.client.get("/audit").text
    assert "user.create" in audit and "user.change" in audit
    actions = [a[:2] for a in _audit(site)]
    assert ("user.create", "ok") in actions and ("user.change", "failed") in actions


def test_sign_out_ends_the_session(site: Site) -> None:
    csrf = sign_in(site.client, "rita", READER_PASSWORD)
    assert site.client.post("/signout", data={"csrf_token": "bad"}).status_code == 403
    out = site.client.post("/signout", data={"csrf_token": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    assert site.client.get("/").status_code == 303


def test_the_inventory_needs_an_operator_and_a_known_library(site: Site) -> None:
    create_virtual_library("v1", slots=3, drives=1, import_export=0, cartridges=2)
    site.accounts.catalog.add_library(Library("v1", LibraryKind.VIRTUAL))
    reader = sign_in(site.client, "rita", READER_PASSWORD)
    hx = {"HX-Request": "true"}
    url = "/libraries/v1/inventory"
    assert site.client.post(url, data={"csrf_token": reader}, headers=hx).status_code == 403
    operator = sign_in(site.client, "olga", OPERATOR_PASSWORD)
    done = site.client.post(url, data={"csrf_token": operator}, headers=hx)
    assert done.status_code == 200 and 'id="library-v1"' in done.text
    assert "2 new (VT0001L8, VT0002L8" in done.text  # fast: new barcodes are listed
    plain = site.client.post(url, data={"csrf_token": operator})
    assert plain.status_code == 303 and plain.headers["location"] == "/libraries"
    unknown = site.client.post(
        "/libraries/nope/inventory", data={"csrf_token": operator}, headers=hx
    )
    assert unknown.status_code == 404 and unknown.text.startswith('<p class="error"')
    assert ("library.inventory", "ok", "olga") in _audit(site)
    assert ("library.inventory", "failed", "olga") in _audit(site)
