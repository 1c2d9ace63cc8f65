"""check: pack subsets for --read-data-subset, and the reports of a healthy repository."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strongroom.repository.check import select_packs
from strongroom.repository.format import BlobType
from strongroom.repository.repo import Repository
from strongroom.services.maintenance import check

pack_ids = st.lists(st.binary(min_size=32, max_size=32), unique=True, max_size=60)


@given(packs=pack_ids, m=st.integers(1, 9))
def test_n_of_m_subsets_partition_the_packs(packs: list[bytes], m: int) -> None:
    groups = [select_packs(packs, f"{n}/{m}") for n in range(1, m + 1)]
    assert sorted(p for g in groups for p in g) == sorted(packs)


@given(packs=pack_ids.filter(bool), percent=st.integers(1, 100), seed=st.integers(0, 9))
def test_percentage_subsets(packs: list[bytes], percent: int, seed: int) -> None:
    chosen = select_packs(packs, f"{percent}%", seed)
    assert 1 <= len(chosen) <= len(packs)
    assert len(set(chosen)) == len(chosen) and set(chosen) <= set(packs)
    assert abs(len(chosen) - len(packs) * percent / 100) <= 1
    assert select_packs(packs, f"{percent}%", seed) == chosen


@pytest.mark.parametrize("subset", ["0/3", "4/3", "0%", "101%", "x", "1/0"])
def test_malformed_subsets(subset: str) -> None:
    with pytest.raises((ValueError, ZeroDivisionError)):
        select_packs([os.urandom(32)], subset)


def test_check_of_a_healthy_repository(memory_repo: Repository) -> None:
    for _ in range(5):
        memory_repo.put_chunk(BlobType.DATA, os.urandom(300_000))
    memory_repo.flush()
    result = check(memory_repo, read_data=True)
    assert result.report.ok and result.report.warnings == []
    assert result.report.packs_read == 1 and result.report.chunks_read == 5
    half = check(memory_repo, subset="1/1")
    assert half.report.packs_read == 1


def test_read_data_reports_totals_in_packs_and_bytes(memory_repo: Repository) -> None:
    """check --read-data's progress knows its totals from the start (packs and their bytes),
    so the bar shows a percentage and an ETA; the CLI counts packs, not files."""
    from strongroom.cli.output import progress_files, progress_percent
    from strongroom.types import Progress

    for _ in range(3):
        memory_repo.put_chunk(BlobType.DATA, os.urandom(300_000))
        memory_repo.flush()  # one pack each
    seen: list[tuple[int, int | None, int, int | None, str, str]] = []

    def record(p: Progress) -> None:
        seen.append((p.files_done, p.files_total, p.bytes_done, p.bytes_total, p.unit,
                     progress_files(p)))  # fmt: skip
        assert p.eta is not None or p.bytes_done == p.bytes_total
        assert progress_percent(p).strip().endswith("%")

    check(memory_repo, read_data=True, progress=record)
    assert [s[0] for s in seen] == [1, 2, 3]
    assert {s[1] for s in seen} == {3} and seen[-1][2] == seen[-1][3] > 900_000
    assert seen[0][4:] == ("pack", "1/3 packs")
