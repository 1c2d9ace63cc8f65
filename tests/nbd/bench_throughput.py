"""Throughput of the NBD client and server against the real tools (not a test).

    python -m tests.nbd.bench_throughput [--size-mib 1024] [--dir /dev/shm]

Serves an in-memory export with NbdServer and copies it with nbdcopy (to
null: and to a file) and qemu-img convert; then serves a raw file with
qemu-nbd and reads it with NbdClient.read_many, next to nbdcopy to null:.
Prints MB/s (10^6 bytes per second) per run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from strongroom.nbd.client import NbdClient
from strongroom.nbd.exports import MemoryExport
from strongroom.nbd.server import NbdServer
from tests.nbd.conftest import MiB, pattern, qemu_nbd


def _rate(label: str, size: int, action: Callable[[], object], repeat: int = 3) -> None:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    print(f"{label:58s} {size / best / 1e6:8.0f} MB/s  (best of {repeat}, {best:.2f} s)")


def _tool(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dir", default="/dev/shm", help="where output and raw files go")
    parser.add_argument("--preferred", type=int, default=None, help="server preferred block")
    args = parser.parse_args()
    size = args.size_mib * MiB
    data = pattern(size)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        out = work / "out.raw"
        kwargs = {} if args.preferred is None else {"preferred_block": args.preferred}
        with NbdServer({"disk": MemoryExport("disk", data)}, **kwargs) as server:
            uri = server.listen_unix(str(work / "srv.sock"))
            server.start()
            print(f"NbdServer, in-memory export of {args.size_mib} MiB ({uri})")
            _rate("  nbdcopy -> null:", size, lambda: _tool("nbdcopy", uri, "null:"))
            _rate("  nbdcopy -> file", size, lambda: _tool("nbdcopy", uri, out))
            out.unlink()
            _rate(
                "  qemu-img convert -O raw -> file",
                size,
                lambda: (_tool("qemu-img", "convert", "-O", "raw", uri, out), out.unlink()),
            )

            def ours() -> None:
                with NbdClient.connect(uri) as client:
                    for _ in client.read_many((o, 4 * MiB) for o in range(0, size, 4 * MiB)):
                        pass

            _rate("  NbdClient.read_many 4 MiB ranges", size, ours)
        raw = work / "disk.raw"
        raw.write_bytes(data)
        del data
        with qemu_nbd(raw, "-r", "-f", "raw", sock=work / "q.sock") as uri:
            print(f"qemu-nbd, raw file of {args.size_mib} MiB in {args.dir}")
            _rate("  nbdcopy -> null:", size, lambda: _tool("nbdcopy", uri, "null:"))
            for chunk in (1, 4, 16):

                def read(chunk: int = chunk) -> None:
                    with NbdClient.connect(uri) as client:
                        step = chunk * MiB
                        for _ in client.read_many((o, step) for o in range(0, size, step)):
                            pass

                _rate(f"  NbdClient.read_many {chunk} MiB ranges, depth 8", size, read)
        os.sync()


if __name__ == "__main__":
    main()
