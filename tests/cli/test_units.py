"""cli/units.py: sizes and durations as users type them, and the option callbacks."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from strongroom.cli.units import duration_seconds, parse_duration, parse_size, size_bytes

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("4096", 4096),
        ("4k", 4 * KiB),
        ("4K", 4 * KiB),
        ("4KB", 4 * KiB),
        ("4KiB", 4 * KiB),
        ("4kib", 4 * KiB),
        ("512M", 512 * MiB),
        ("512MiB", 512 * MiB),
        ("512mb", 512 * MiB),
        ("64G", 64 * GiB),
        ("64GiB", 64 * GiB),
        ("2T", 2 * TiB),
        ("2TB", 2 * TiB),
        ("100B", 100),
        (" 16 M ", 16 * MiB),
        ("16M\n", 16 * MiB),
        ("007M", 7 * MiB),
        ("123456789012345678901234567890", 123456789012345678901234567890),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert size_bytes(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "M",
        "GiB",
        "banana",
        "1.5G",
        ".5G",
        "-1",
        "-1M",
        "+1M",
        "5P",
        "5E",
        "1GG",
        "1 G B",
        "1MiBs",
        "1e6",
        "0x10",
        "1_000",
        "1,000",
        "12\n3",
    ],
)
def test_not_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        size_bytes(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0.0),
        ("30", 30.0),
        ("90s", 90.0),
        ("90S", 90.0),
        ("5m", 300.0),
        ("5M", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("1.5h", 5400.0),
        ("0.25s", 0.25),
        (" 5 m ", 300.0),
    ],
)
def test_durations(text: str, expected: float) -> None:
    assert duration_seconds(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "s", "m5", "5x", "5ms", "5min", "1.", ".5", "-1s", "1h30m", "1,5h", "1e3", "5 5s"],
)
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        duration_seconds(text)


@click.command()
@click.option("--size", callback=parse_size)
@click.option("--every", callback=parse_duration)
def show(size: int | None, every: float | None) -> None:
    click.echo(f"{size!r} {every!r}")


def test_option_callbacks() -> None:
    runner = CliRunner()
    result = runner.invoke(show, ["--size", "2M", "--every", "1.5m"])
    assert result.exit_code == 0, result.output
    assert result.output == f"{2 * MiB} 90.0\n"
    assert runner.invoke(show, []).output == "None None\n"


@pytest.mark.parametrize(
    ("args", "option", "message"),
    [
        (["--size", "lots"], "--size", "is not a size"),
        (["--every", "often"], "--every", "is not a duration"),
    ],
)
def test_option_callbacks_name_the_option(args: list[str], option: str, message: str) -> None:
    result = CliRunner().invoke(show, args)
    assert result.exit_code == 2  # click's usage error
    assert f"Invalid value for '{option}'" in result.output
    assert message in result.output
