"""The demo project: a synthetic cohort, so that a new installation shows something real.

The data are generated from a fixed seed; they describe no real person. The project also
gets a dashboard (templates/dashboards/demo-survie.ipynb): its notebook is put in the work
area, as an analyst would leave it, and published from there.
"""

from __future__ import annotations

import csv
import io
import math
import random
import tarfile
import time
from pathlib import Path

import docker

from . import project_resources
from .settings import REPO_ROOT

DEMO_SLUG = "demo"
DEMO_TITLE = "Démo : cohorte synthétique / Demo: synthetic cohort"
DEMO_FILE = "cohorte_synthetique.csv"
DEMO_DASHBOARD = REPO_ROOT / "templates" / "dashboards" / "demo-survie.ipynb"
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


def copy_to_work(client: docker.DockerClient, slug: str, source: Path) -> str:
    """Put a file in the project's work area, owned by the notebook user as if a member
    saved it there; returns its path in work/ (an existing file is left as it is)."""
    volumes = project_resources.ensure_volumes(client.api, slug)
    archive = io.BytesIO()
    data = source.read_bytes()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo(source.name)
        info.size, info.mode, info.uid, info.gid, info.mtime = len(data), 0o660, 1000, 1000, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    container = client.containers.create(
        project_resources.UTILITY_IMAGE, command=["true"], network_mode="none",
        volumes={volumes["work"]: {"bind": "/work", "mode": "rw"}},
        labels={"org.hdshub.purpose": "demo-notebook"}, name=f"hds-demo-copy-{time.time_ns()}",
    )
    try:
        try:
            container.get_archive(f"/work/{source.name}")
        except docker.errors.NotFound:
            container.put_archive("/work", archive.getvalue())
    finally:
        container.remove(force=True)
    return f"work/{source.name}"
