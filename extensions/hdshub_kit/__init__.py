"""hdshub_kit: helpers every statistics kit offers to notebooks, dashboards and reports.

Importable in any project kernel (`import hdshub_kit`): the folder holding it is mounted
read-only from the hub's release, next to the guard extension, and is on every project
container's PYTHONPATH. Like the guard, it never imports the hub package.

- disclosure.py  small counts hidden before a table reaches a screen or a report
"""

from .disclosure import (
    MIN_COUNT, count_or_suppressed, hidden_cells, small_count_mask, suppress_small_counts,
)

__all__ = [
    "MIN_COUNT", "count_or_suppressed", "hidden_cells", "small_count_mask", "suppress_small_counts",
]
