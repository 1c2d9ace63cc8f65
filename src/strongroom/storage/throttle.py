"""`--limit-upload`: a backend wrapper that holds the bytes written to storage
to a rate.

Every byte a `put`, `create` or streamed temporary object writes is taken
from one `TokenBucket` after it was handed to the backend (the bucket is
shared by all the threads of the job, and its sleeps hold no lock of ours or
the backend's). Reads, listings and deletes pass unthrottled. The wrapper
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
    """`inner` with its writes held to `bucket`'s rate."""

    def __init__(self, inner: Backend, bucket: TokenBucket) -> None:
        super().__init__(inner)
        self.bucket = bucket

    def put(self, name: str, data: Content) -> None:
        self.inner.put(name, data)
        self.bucket.take(content_length(data))

    def create(self, name: str, data: bytes | bytearray | memoryview) -> None:
        self.inner.create(name, data)
        self.bucket.take(len(data))


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
        if isinstance(temp, SparseTemp):
            return _ThrottledSparseTemp(temp, self.bucket)
        return _ThrottledTemp(temp, self.bucket)


def throttled(backend: Backend, bucket: TokenBucket) -> Backend:
    """`backend` with its writes held to `bucket` (the module docstring)."""
    if isinstance(backend, StreamingPut):
        return ThrottledStreamingBackend(backend, bucket)
    return ThrottledBackend(backend, bucket)
