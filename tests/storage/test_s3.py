"""The S3 backend against a real Ceph RADOS Gateway (see tests/helpers/s3.py):
the shared contract suite, what is S3's own (ranges, pagination, conditional
creates, errors), and the CLI end to end. Every test gets a new bucket."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from strongroom.errors import (
    InvalidObjectName,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    TransientStorageError,
    UsageError,
)
from strongroom.storage import Backend, open_backend
from strongroom.storage.base import StreamingPut
from strongroom.storage.s3 import S3Backend, S3Location, parse_location
from strongroom.storage.testing import BackendContract
from tests.helpers.cli import run_cli
from tests.helpers.compare import walk_differences
from tests.helpers.s3 import Gateway, cluster_dir, new_bucket_name, start_gateway, stop_gateway
from tests.helpers.tree import make_small_tree, random_bytes, write_file

MiB = 1 << 20


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    directory = cluster_dir()
    started = time.monotonic()
    gw = start_gateway(directory)
    print(f"ceph gateway at {gw.endpoint} in {time.monotonic() - started:.1f} s")
    yield gw
    stop_gateway(directory)


@pytest.fixture
def s3(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    """The gateway, with its credentials in this test's environment (only there)."""
    for name, value in gateway.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return gateway


def fresh_backend(location: str, **options: Any) -> S3Backend:
    backend = S3Backend(location, **options)
    backend.ensure_bucket()
    return backend


class TestS3Backend(BackendContract):
    @pytest.fixture
    def backend(self, s3: Gateway) -> Iterator[Backend]:
        backend = fresh_backend(s3.location(prefix="some/repo"))
        yield backend
        backend.close()


# --- locations (no server) -------------------------------------------------------


def test_location_syntax(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_location("s3:http://127.0.0.1:7480/bkt/a/b/") == S3Location(
        "http://127.0.0.1:7480", "bkt", "a/b/"
    )
    assert parse_location("s3:https://s3.example.org/bkt") == S3Location(
        "https://s3.example.org", "bkt", ""
    )
    assert parse_location("s3:s3.example.org/bkt/x") == S3Location(
        "https://s3.example.org", "bkt", "x/"
    )
    for name in ("STRONGROOM_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    assert parse_location("s3://bkt/p") == S3Location(None, "bkt", "p/")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws-env:1")
    assert parse_location("s3://bkt").endpoint == "http://aws-env:1"
    monkeypatch.setenv("STRONGROOM_S3_ENDPOINT", "http://ours:2")
    assert parse_location("s3://bkt").endpoint == "http://ours:2"
    for bad in ("s3:http://key:secret@host/bkt", "s3:ftp://host/bkt", "s3://B_ad", "s3://x"):
        with pytest.raises(UsageError) as caught:
            parse_location(bad)
        assert "secret" not in str(caught.value)


def test_open_backend_knows_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    backend = open_backend("s3:http://127.0.0.1:1/bucket/path")  # no request yet
    assert isinstance(backend, S3Backend) and isinstance(backend, StreamingPut)
    assert backend.capabilities.parallel_requests == 8 and backend.capabilities.ranged_get
    with pytest.raises(InvalidObjectName):
        backend.put("tmp/x", b"")  # reserved, as in the local backend
    backend.close()
    backend.close()  # idempotent


# --- against the gateway ---------------------------------------------------------


def test_ranged_get_at_the_end(s3: Gateway) -> None:
    backend = fresh_backend(s3.location())
    blob = random_bytes(1000, 1)
    backend.put("data/00/r", blob)
    assert backend.get_range("data/00/r", 990, 10) == blob[990:]
    assert backend.get_range("data/00/r", 995, 10) == blob[995:]
    assert backend.get_range("data/00/r", 999, 1) == blob[999:]
    assert backend.get_range("data/00/r", 1000, 5) == b""
    assert backend.get_range("data/00/r", 5000, 5) == b""
    assert backend.get_range("data/00/r", 3, 0) == b""
    with pytest.raises(ObjectNotFound):
        backend.get_range("data/00/nothing", 0, 0)


def test_list_follows_pages_beyond_1000_keys(s3: Gateway) -> None:
    bucket = new_bucket_name()
    backend = fresh_backend(s3.location(bucket, prefix="repo"))
    names = [f"data/{i % 256:02x}/obj{i:05d}" for i in range(1010)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: backend.put(n, n.encode()), names))
    backend.put("config", b"c")
    listed = {o.name: o.size for o in backend.list("data/")}
    assert listed == {n: len(n) for n in names}
    assert len(list(backend.list(""))) == 1011
    # The same objects seen from the bucket's root: the prefix is part of the name.
    root = S3Backend(s3.location(bucket, prefix=""))
    assert sorted(o.name for o in root.list("repo/c")) == ["repo/config"]


def test_conditional_create_is_atomic_on_ceph(s3: Gateway) -> None:
    backend = fresh_backend(s3.location())
    backend.create("locks/a", b"1")
    assert backend.capabilities.atomic_create  # Ceph 16.2 honours If-None-Match: *
    with pytest.raises(ObjectExists):
        backend.create("locks/a", b"2")
    assert backend.get("locks/a") == b"1"
    assert [o.name for o in backend.list("")] == ["locks/a"]  # the probe left nothing


def test_server_ignoring_if_none_match_falls_back(s3: Gateway) -> None:
    """A server that drops the header (simulated: the client never sends it) is
    found out by the probe; create still refuses an existing name, not atomically."""
    backend = fresh_backend(s3.location())

    def drop_header(request: Any, **_: Any) -> None:
        if "If-None-Match" in request.headers:
            del request.headers["If-None-Match"]

    backend._client.meta.events.register("before-sign.s3.PutObject", drop_header)
    backend.create("keys/k", b"first")
    assert not backend.capabilities.atomic_create
    with pytest.raises(ObjectExists):
        backend.create("keys/k", b"second")
    assert backend.get("keys/k") == b"first"
    assert [o.name for o in backend.list("")] == ["keys/k"]  # the probe left nothing


def test_the_bucket_is_created_on_first_write(s3: Gateway) -> None:
    backend = S3Backend(s3.location())
    assert not backend.exists("config")
    with pytest.raises(StorageError, match=r"bucket .* does not exist") as caught:
        backend.get("config")
    assert not isinstance(caught.value, ObjectNotFound)
    backend.create("keys/first", b"k")
    assert backend.get("keys/first") == b"k"


def test_a_streamed_first_write_creates_the_bucket(s3: Gateway) -> None:
    # Regression: upload_fileobj closes its stream when the bucket is missing,
    # so the bucket must exist before a streamed upload starts, and the upload
    # must start from the spool's first byte (it once shipped empty objects).
    backend = S3Backend(s3.location())
    temp = backend.open_temp()
    temp.write(b"x" * 1000)
    temp.commit("data/bb/first")
    assert backend.get("data/bb/first") == b"x" * 1000


def test_streaming_put_spools_then_uploads(s3: Gateway) -> None:
    backend = fresh_backend(s3.location())
    temp = backend.open_temp()
    temp.write(b"abc")
    temp.write(memoryview(b"def"))
    assert list(backend.list("")) == []  # nothing sent before commit
    temp.commit("data/aa/streamed")
    assert backend.get("data/aa/streamed") == b"abcdef"
    dropped = backend.open_temp()
    dropped.write(b"never")
    dropped.abort()
    dropped.abort()
    assert [o.name for o in backend.list("")] == ["data/aa/streamed"]
    # Above the threshold, a multipart upload (Ceph's smallest part is 5 MiB).
    backend._transfer = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    big = random_bytes(11 * MiB, 2)
    temp = backend.open_temp()
    for offset in range(0, len(big), MiB):
        temp.write(big[offset : offset + MiB])
    temp.commit("data/bb/multipart")
    assert backend.get("data/bb/multipart") == big


def test_bad_credentials_are_one_clear_line(s3: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    backend = S3Backend(s3.location(), attempts=1)
    for call in (lambda: backend.put("config", b"x"), lambda: backend.exists("config")):
        with pytest.raises(StorageError) as caught:
            call()
        message = str(caught.value)
        assert "access denied" in message and backend.bucket in message, message
        assert "\n" not in message and "not-the-secret" not in message
        assert s3.env["AWS_ACCESS_KEY_ID"] not in message


def test_unreachable_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = S3Backend(f"s3:http://127.0.0.1:{port}/bkt/p", connect_timeout=1, attempts=2)
    started = time.monotonic()
    with pytest.raises(TransientStorageError) as caught:
        backend.get("config")
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "\n" not in message, message


def test_cli_init_backup_restore_check(s3: Gateway, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_small_tree(src)
    write_file(src / "big.bin", random_bytes(3 * MiB, 3))  # a data pack that streams
    env = dict(os.environ)
    location = s3.location(prefix="cli/repo")

    def cli(*args: str) -> Any:
        result = run_cli(["--repo", location, *args], env, timeout=120)
        assert result.rc == 0, (args, result.err)
        return result

    assert location in cli("init").out
    cli("backup", str(src), "--json")
    target = tmp_path / "restored"
    cli("restore", "latest", "--target", str(target))
    restored = target / str(src).lstrip("/")
    assert walk_differences(src, restored, check_atime=False) == []
    assert {rel: (restored / rel).read_bytes() for rel in files} == files
    assert (restored / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    cli("check", "--read-data")

    wrong = run_cli(["--repo", location, "snapshots"], {**env, "AWS_SECRET_ACCESS_KEY": "nope"})
    assert wrong.rc != 0 and "Traceback" not in wrong.err
    assert "access denied" in wrong.err and "nope" not in wrong.err, wrong.err
