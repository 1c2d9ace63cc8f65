"""`strongroom pool`, `media label` and `copy-to-media` through the real
program: the virtual library and the catalog in the data folder, exit codes
and one-line errors (docs/cli.md)."""

from __future__ import annotations

from tests.cli.conftest import BackedUp
from tests.conftest import CliRunner


def _err(result: object) -> str:
    return str(getattr(result, "err", "")).strip()


def test_pools_labels_and_copy_to_media(cli: CliRunner, backed_up: BackedUp) -> None:
    made = cli("library", "create", "vlib", "--slots", "6", "--cartridges", "3", "--json")
    assert made.rc == 0, made.err
    pool = cli("pool", "create", "offsite", "--retention", "7y", "--media-type", "LTO-8", "--json")
    assert pool.rc == 0, pool.err
    assert pool.summary()["retention_seconds"] == 7 * 365 * 86400
    bad = cli("pool", "create", "weekly", "--retention", "7 years")
    assert bad.rc == 2 and _err(bad).count("\n") == 0 and "7y, 18m (months)" in bad.err

    # Nothing labelled yet: one clear line, exit 1.
    none = cli("copy-to-media", backed_up.point_id[:12], "--pool", "offsite")
    assert none.rc == 1
    assert _err(none) == (
        "strongroom: error: no writable medium in pool offsite: label one with "
        "'strongroom media label BARCODE --pool offsite'"
    )
    unknown = cli("media", "label", "NOPE01", "--pool", "offsite")
    assert unknown.rc == 1
    assert _err(unknown) == "strongroom: error: no cartridge with barcode NOPE01 in library vlib"

    labelled = cli("media", "label", "--all-new", "--pool", "offsite", "--json")
    assert labelled.rc == 0, labelled.err
    media = labelled.summary()["media"]
    assert [(m["barcode"], m["sequence"], m["labelled"]) for m in media] == [
        ("VT0001L8", 1, True),
        ("VT0002L8", 2, True),
        ("VT0003L8", 3, True),
    ]

    copied = cli("copy-to-media", backed_up.point_id[:12], "--pool", "offsite", "--json")
    assert copied.rc == 0, copied.err
    doc = copied.summary()
    assert doc["written"] == [backed_up.point_id] and doc["skipped"] == []
    assert [(c["barcode"], c["session"], c["state"]) for c in doc["cartridges"]] == [
        ("VT0001L8", 1, "appending")
    ]
    again = cli("copy-to-media", "latest", "--pool", "offsite")  # 'latest' as elsewhere
    assert again.rc == 0 and "already on media of pool offsite (skipped)" in again.out

    # A cartridge with data is not relabelled without --force.
    relabel = cli("media", "label", "VT0001L8", "--pool", "offsite")
    assert relabel.rc == 1 and "already labelled" in relabel.err and "--force" in relabel.err

    shown = cli("pool", "show", "offsite", "--json")
    assert shown.rc == 0, shown.err
    states = {m["barcode"]: m["state"] for m in shown.json()["media_list"]}
    assert states == {"VT0001L8": "appending", "VT0002L8": "free", "VT0003L8": "free"}
    listed = cli("pool", "list", "--json").json()["pools"]
    assert listed[0]["states"] == {"appending": 1, "free": 2} and listed[0]["retention"] == "7y"
    human = cli("pool", "list")
    assert "offsite" in human.out and "7y" in human.out

    refused = cli("pool", "remove", "offsite")
    assert refused.rc == 1 and "pool offsite still holds 3 media" in refused.err
    cli("pool", "create", "spare", "--retention", "30d")
    assert cli("pool", "remove", "spare").rc == 0
    assert cli("pool", "show", "spare").rc == 1
