"""Tables the benchmarks print: the first column to the left, the figures to the right."""

from __future__ import annotations


def aligned(rows: list[list[str]], separator: str) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        separator.join(
            [r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))]
        )
        for r in rows
    ]
