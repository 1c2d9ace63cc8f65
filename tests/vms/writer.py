"""A cluster host writing to a VM's disks over NBD: sequence-stamped 4 KiB records.

Run as a program (one process per writer, so writers really are concurrent):

    writer.py --id N --uri URI [--uri URI2] --offset BYTES --slots K --log PATH [--pause S]

Record SEQ goes to slot SEQ % K of the writer's region (`offset` onwards) of
every URI in turn, each write waiting for its acknowledgement: with two URIs
(two disks of one VM) record SEQ reaches the first disk before it is sent to
the second, a fixed order. Each record holds the writer's id and SEQ, so
which writes an image holds is decidable: the slot of SEQ holds SEQ or a
later record of the same slot when the write is in, an earlier one when not.

The writer prints "ready" once it has written a few records, and stops at
SIGTERM (after finishing the record in hand on every disk); then it writes
its log, one line per write: `seq disk t_sent t_acked` (wall-clock seconds).
"""

from __future__ import annotations

import argparse
import signal
import struct
import sys
import time
from typing import NamedTuple

RECORD = 4096
MAGIC = b"SRVM"
_HEADER = struct.Struct("<4sIQ")  # magic, writer id, sequence number
_ZERO = bytes(RECORD)
READY_AFTER = 20


class Write(NamedTuple):
    seq: int
    disk: int  # index of the URI written
    sent: float
    acked: float


class TornRecord(AssertionError):
    """A slot that holds neither zeros nor one whole record."""


def record(writer: int, seq: int) -> bytes:
    header = _HEADER.pack(MAGIC, writer, seq)
    return header * (RECORD // len(header))


def parse(block: bytes) -> tuple[int, int] | None:
    """(writer, seq) of a record slot; None if it was never written."""
    if block == _ZERO:
        return None
    magic, writer, seq = _HEADER.unpack_from(block)
    if magic != MAGIC or block != record(writer, seq):
        raise TornRecord(f"slot holds no whole record (starts {block[:16].hex()})")
    return writer, seq


def read_log(path: str) -> list[Write]:
    out = []
    with open(path, encoding="ascii") as f:
        for line in f:
            seq, disk, sent, acked = line.split()
            out.append(Write(int(seq), int(disk), float(sent), float(acked)))
    return out


def main(argv: list[str]) -> int:
    from strongroom.nbd.client import NbdClient

    ap = argparse.ArgumentParser()
    ap.add_argument("--id", type=int, required=True)
    ap.add_argument("--uri", action="append", required=True)
    ap.add_argument("--offset", type=int, required=True)
    ap.add_argument("--slots", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--pause", type=float, default=0.0)
    args = ap.parse_args(argv)

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    clients = [NbdClient.connect(uri) for uri in args.uri]
    log: list[tuple[int, int, float, float]] = []
    seq = 0
    while not stopping:
        data = record(args.id, seq)
        where = args.offset + (seq % args.slots) * RECORD
        for disk, client in enumerate(clients):
            sent = time.time()
            client.pwrite(data, where)
            log.append((seq, disk, sent, time.time()))
        seq += 1
        if seq == READY_AFTER:
            print("ready", flush=True)
        if args.pause:
            time.sleep(args.pause)
    for client in clients:
        client.close()
    with open(args.log, "w", encoding="ascii") as f:
        f.writelines(f"{s} {d} {t0!r} {t1!r}\n" for s, d, t0, t1 in log)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
