"""The demo project: a synthetic cohort, so that a new installation shows something real.

The data are generated from a fixed seed; they describe no real person.
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

DEMO_SLUG = "demo"
DEMO_TITLE = "Démo : cohorte synthétique / Demo: synthetic cohort"
DEMO_FILE = "cohorte_synthetique.csv"
COLUMNS = [
    "patient_id", "age", "sex", "treatment", "bmi", "diabetes", "time_months", "event",
]


def synthetic_cohort(n: int = 500, seed: int = 2026) -> list[dict]:
    """Rows of a two-arm synthetic cohort with survival times (treatment B lowers hazard)."""
    rng = random.Random(seed)
    rows = []
    for i in range(1, n + 1):
        age = min(95, max(18, round(rng.gauss(62, 12))))
        sex = rng.choice(["F", "M"])
        treatment = rng.choice(["A", "B"])
        bmi = round(rng.gauss(27, 4.5), 1)
        diabetes = int(rng.random() < 0.18 + 0.004 * (age - 60))
        hazard = 0.02 * math.exp(0.03 * (age - 60) + 0.5 * diabetes - 0.4 * (treatment == "B"))
        time = rng.expovariate(hazard)
        censor = rng.uniform(6, 60)
        rows.append(
            {
                "patient_id": f"SYN-{i:04d}",
                "age": age,
                "sex": sex,
                "treatment": treatment,
                "bmi": bmi,
                "diabetes": diabetes,
                "time_months": round(min(time, censor), 2),
                "event": int(time <= censor),
            }
        )
    return rows


def write_cohort(path: Path, n: int = 500, seed: int = 2026) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(synthetic_cohort(n, seed))
    return path
