"""Small counts are hidden before a table is shown: a cell of 3 patients can identify them.

French practice for health data (CNIL, SNDS) shows no count of 1 to 9 people. A hidden cell
can often be recovered from the margins (row total minus the other cells), so a row or a
column with exactly one hidden cell also hides its next smallest non-zero cell
(complementary suppression). Zero stays visible: it describes no one.

The helpers take pandas objects of counts (or plain lists of rows) and never change them;
they return a copy ready to display. They help analysts; they are not the release check:
the airlock reviews again whatever leaves the project.
"""

from __future__ import annotations

MIN_COUNT = 10


def marker_for(threshold: int) -> str:
    return f"< {threshold}"


def hidden_cells(rows: list[list[int]], threshold: int = MIN_COUNT,
                 complementary: bool = True) -> list[list[bool]]:
    """For a table of counts (a list of rows), True where a cell must be hidden."""
    _check_threshold(threshold)
    for row in rows:
        for value in row:
            _check_count(value)
    hidden = [[0 < value < threshold for value in row] for row in rows]
    if complementary:
        _hide_complements(rows, hidden)
    return hidden


def _check_threshold(threshold) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ValueError(f"threshold {threshold!r}: expected a whole number >= 1 / seuil "
                         f"{threshold!r} : un entier >= 1 est attendu")


def _check_count(value) -> None:
    try:
        whole = float(value) == int(value) and int(value) >= 0
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise ValueError(f"count {value!r}: counts must be whole numbers >= 0 with no missing "
                         "value; count people first (for example groupby(...).size()) / "
                         f"effectif {value!r} : les effectifs doivent être des entiers >= 0 "
                         "sans valeur manquante")


def _hide_complements(rows: list[list[int]], hidden: list[list[bool]]) -> None:
    """Until no line gives a hidden cell away: a row or column of more than one cell with
    exactly one hidden cell hides one more visible non-zero cell, preferably one whose other
    line has a lone hidden cell too (one cell then protects two lines), else the smallest.
    A greedy choice: safe, not always the fewest cells."""
    height = len(rows)
    width = len(rows[0]) if rows else 0
    row_lines = [[(i, j) for j in range(width)] for i in range(height)] if width > 1 else []
    column_lines = [[(i, j) for i in range(height)] for j in range(width)] if height > 1 else []

    def lone(line) -> bool:
        return sum(hidden[i][j] for i, j in line) == 1

    changed = True
    while changed:
        changed = False
        for is_row, lines in ((True, row_lines), (False, column_lines)):
            for line in lines:
                if not lone(line):
                    continue
                visible = [(i, j) for i, j in line if not hidden[i][j] and rows[i][j] > 0]
                if not visible:
                    continue

                def cost(cell):
                    i, j = cell
                    other = column_lines[j] if is_row and column_lines else row_lines[i] if not is_row and row_lines else []
                    return (not (other and lone(other)), rows[i][j])

                i, j = min(visible, key=cost)
                hidden[i][j] = True
                changed = True


def small_count_mask(counts, threshold: int = MIN_COUNT, complementary: bool = True):
    """The cells to hide of a pandas DataFrame or Series of counts, in the same shape."""
    import pandas as pd

    series = isinstance(counts, pd.Series)
    frame = counts.to_frame() if series else counts
    mask = pd.DataFrame(hidden_cells(frame.values.tolist(), threshold, complementary),
                        index=frame.index, columns=frame.columns, dtype=bool)
    return mask.iloc[:, 0].rename(counts.name) if series else mask


def suppress_small_counts(counts, threshold: int = MIN_COUNT, complementary: bool = True,
                          marker: str | None = None):
    """A copy of a DataFrame or Series of counts to display: hidden cells read '< 10'."""
    mask = small_count_mask(counts, threshold, complementary)
    shown = counts.astype(object)
    shown[mask] = marker if marker is not None else marker_for(threshold)
    return shown


def count_or_suppressed(count: int, threshold: int = MIN_COUNT, marker: str | None = None):
    """One count to display: the number itself, or '< 10' if it is 1..threshold-1."""
    _check_threshold(threshold)
    _check_count(count)
    if 0 < count < threshold:
        return marker if marker is not None else marker_for(threshold)
    return int(count)
