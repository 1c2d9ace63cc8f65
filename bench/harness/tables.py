"""Tables as aligned text (the terminal) or GitHub markdown (``docs/performance.md``).

``align`` has one letter per column: ``l`` (left) or ``r`` (right). ``groups`` heads spans of
columns of a text table with a title (``(title, span)``, '' for none), as in::

                    ------strongroom------  --------restic--------
    phase               s  MB/s  RSS MiB        s  MB/s  RSS MiB
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Table = Callable[[list[str], list[list[str]], str], str]


def plain_table(
    header: list[str],
    rows: Sequence[list[str]],
    align: str,
    groups: Sequence[tuple[str, int]] | None = None,
) -> str:
    """Aligned text table, two spaces between columns, a rule under the header."""
    if len(align) != len(header):
        raise ValueError(f"{len(align)} alignments for {len(header)} columns")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        cells = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(row, widths, align, strict=True)
        ]
        return "  ".join(cells).rstrip()

    lines = []
    if groups:
        spans, col = [], 0
        for title, span in groups:
            width = sum(widths[col : col + span]) + 2 * (span - 1)
            spans.append(title.center(width, "-") if title else " " * width)
            col += span
        lines.append("  ".join(spans).rstrip())
    lines += [fmt(header), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + [fmt(r) for r in rows])


def md_table(header: list[str], rows: Sequence[list[str]], align: str) -> str:
    """GitHub markdown table."""
    if len(align) != len(header):
        raise ValueError(f"{len(align)} alignments for {len(header)} columns")
    rule = [":---" if a == "l" else "---:" for a in align]
    return "\n".join("| " + " | ".join(row) + " |" for row in [header, rule, *rows])


def table_for(markdown: bool) -> Table:
    return md_table if markdown else plain_table


def sentences(lines: Sequence[str]) -> str:
    """Preamble lines as one markdown paragraph: each capitalised and ending with a period."""
    return " ".join(line[0].upper() + line[1:].rstrip(".") + "." for line in lines if line)
