"""The NBD (Network Block Device) protocol in pure Python: a client and a server.

`client.NbdClient` reads (and writes) exports served by qemu-nbd,
qemu-storage-daemon, nbdkit or our own server, including block status
(`base:allocation`, qemu's dirty bitmaps): that is how block sources and
change trackers see a disk. `server.NbdServer` serves read-only exports (a
recovery point's disk image) to qemu-img, nbdcopy, nbdinfo or a VM.

The wire format lives in `protocol` so client and server cannot disagree about
it; `uri` parses and prints the `nbd://` and `nbd+unix://` URIs both use.
The specification is NetworkBlockDevice/nbd doc/proto.md (fixed newstyle
handshake, structured replies, metadata contexts; no TLS, no extended headers).
"""
