"""A clinician's dashboard as they see it: log in, open it from the home page, change a
filter, see the curve and the tables change; notebooks and data files stay closed."""

from __future__ import annotations

import re

import pytest

from tests.browser.test_home import log_in
from tests.support.dashboards import DASHBOARD, dashboard_project

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def project(hub, docker_client):
    return dashboard_project(hub, docker_client, {"claire": "clinician"})


def open_dashboard(page, hub, project):
    page.click(f"section[data-project='{project.slug}'] a.hds-open-dashboard")
    page.wait_for_url(re.compile(rf".*/user/dashboards/{project.slug}/voila/render/{DASHBOARD}\.ipynb$"),
                      timeout=120_000)
    page.locator(".hds-summary").wait_for(timeout=120_000)
    page.locator("img.hds-km[src]").wait_for(timeout=60_000)
    page.locator("table.hds-table").wait_for(timeout=60_000)


def test_clinician_changes_a_filter_and_the_chart_follows(hub, chromium, project, artifacts):
    context = chromium.new_context(locale="fr-FR", viewport={"width": 1200, "height": 1400})
    page = context.new_page()
    log_in(page, hub, "claire", project.passwords["claire"])
    card = page.locator(f"section[data-project='{project.slug}']")
    assert "Tableaux de bord" in card.inner_text()
    open_dashboard(page, hub, project)
    assert page.locator(".hds-bar .hds-brand-sub .hds-fr").inner_text() == "Tableau de bord"
    assert page.locator(".jp-InputArea-editor").count() == 0  # code is stripped, not just hidden

    summary = page.locator(".hds-summary").inner_text()
    curve = page.locator("img.hds-km").get_attribute("src")
    table = page.locator("table.hds-table").inner_text()
    assert summary.startswith("500 patients")
    assert page.locator("table.hds-table td.hds-hidden").count() > 0  # small counts hidden
    assert "< 10" in table

    page.locator(".hds-filter-sex button", has_text="F").click()
    page.wait_for_function("(src) => document.querySelector('img.hds-km').src !== src", arg=curve,
                           timeout=60_000)
    page.wait_for_function(
        "(text) => document.querySelector('table.hds-table').innerText !== text", arg=table, timeout=60_000)
    after = page.locator(".hds-summary").inner_text()
    assert after != summary and int(after.split()[0]) < 500
    page.screenshot(path=str(artifacts / "dashboard-fr.png"), full_page=True)

    for path in ("lab", "tree", "files/data/cohorte_synthetique.csv", "api/contents/data"):
        reply = page.goto(f"{hub.public_url}/user/dashboards/{project.slug}/{path}")
        assert reply.status == 403, path
        if path == "lab":
            assert "Accès refusé" in page.content()
            page.screenshot(path=str(artifacts / "dashboard-lab-refused.png"))
    # The data file through the clinician's own (refused) server, and through Voilà.
    own = page.goto(f"{hub.public_url}/user/claire/{project.slug}/files/data/cohorte_synthetique.csv")
    assert own.status in (403, 404, 424, 503) and "patient_id" not in page.content()
    voila_file = page.goto(f"{hub.public_url}/user/dashboards/{project.slug}/voila/files/data/cohorte_synthetique.csv")
    assert voila_file.status in (403, 404) and "patient_id" not in page.content()
    context.close()


def test_english_when_the_browser_prefers_it(hub, chromium, project, artifacts):
    context = chromium.new_context(locale="en-US", viewport={"width": 1200, "height": 1400})
    page = context.new_page()
    log_in(page, hub, "claire", project.passwords["claire"])
    open_dashboard(page, hub, project)
    assert page.locator(".hds-bar .hds-brand-sub .hds-en").inner_text() == "Dashboard"
    assert not page.locator(".hds-bar .hds-brand-sub .hds-fr").is_visible()
    assert "observed deaths" in page.locator(".hds-summary").inner_text()
    page.screenshot(path=str(artifacts / "dashboard-en.png"), full_page=True)
    context.close()
