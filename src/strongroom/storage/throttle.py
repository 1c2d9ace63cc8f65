"""`--limit-upload` and `--limit-download`: a backend wrapper that holds the
bytes written to storage, and those read from it, to a rate each.

Every byte a `put`, `create` or streamed temporary object writes is taken
from the upload `TokenBucket` after it was handed to the backend; every byte
a `get` or `get_range` returns, from the download bucket (each bucket is
shared by all the threads of the job, and its sleeps hold no lock of ours or
the backend's). A direction without a bucket passes unthrottled, as do
listings, sizes and deletes (a few bytes each). Reads the local cache of a
remote repository answers never reach the backend, so they cost no download
rate. The wrapper
forwards everything else, and has the optional abilities of what it wraps and
no others: `throttled` returns a streaming wrapper only over a backend that
streams (`StreamingPut`), and a streamed object keeps `skip` (holes cost no
upload) only when the backend's own temporary objects have it.
"""

from __future__ import annotations

from strongroom.bandwidth import TokenBucket
from strongroom.storage.base import (
    Backend,
    Buffer,
    Content,
    ForwardingBackend,
    SparseTemp,
    StreamingPut,
    TempObject,
    content_length,
)


class ThrottledBackend(ForwardingBackend):
    """`inner` with its writes held to `upload`'s rate and its reads to `download`'s."""

    def __init__(
        self, inner: Backend, upload: TokenBucket | None, download: TokenBucket | None = None
    ) -> None:
        super().__init__(inner)
        self.upload = upload
        self.download = download

    def put(self, name: str, data: Content) -> None:
        self.inner.put(name, data)
        if self.upload is not None:
            self.upload.take(content_length(data))

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self.inner.create(name, data)
        if self.upload is not None:
            self.upload.take(len(data))

    def get(self, name: str) -> bytes:
        data = self.inner.get(name)
        if self.download is not None:
            self.download.take(len(data))
        return data

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        data = self.inner.get_range(name, offset, length)
        if self.download is not None:
            self.download.take(len(data))
        return data


class _ThrottledTemp:
    def __init__(self, inner: TempObject, bucket: TokenBucket) -> None:
        self.inner = inner
        self.bucket = bucket

    def write(self, data: Buffer) -> None:
        self.inner.write(data)
        self.bucket.take(len(data))

    def commit(self, name: str) -> None:
        self.inner.commit(name)

    def abort(self) -> None:
        self.inner.abort()


class _ThrottledSparseTemp(_ThrottledTemp):
    def skip(self, length: int) -> None:
        assert isinstance(self.inner, SparseTemp)
        self.inner.skip(length)


class ThrottledStreamingBackend(ThrottledBackend):
    """A `ThrottledBackend` over a backend that streams (`StreamingPut`)."""

    def open_temp(self) -> TempObject:
        assert isinstance(self.inner, StreamingPut)
        temp = self.inner.open_temp()
        if self.upload is None:
            return temp
        if isinstance(temp, SparseTemp):
            return _ThrottledSparseTemp(temp, self.upload)
        return _ThrottledTemp(temp, self.upload)


def throttled(
    backend: Backend, upload: TokenBucket | None, download: TokenBucket | None = None
) -> Backend:
    """`backend` with its writes held to `upload` and its reads to `download`
    (the module docstring); `backend` itself when both are None."""
    if upload is None and download is None:
        return backend
    if isinstance(backend, StreamingPut):
        return ThrottledStreamingBackend(backend, upload, download)
    return ThrottledBackend(backend, upload, download)
