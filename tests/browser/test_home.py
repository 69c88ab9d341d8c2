"""The home page as a person sees it: log in, see one's projects in one's language, start."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.docker


def log_in(page, hub, user, password):
    page.goto(f"{hub.public_url}/hub/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("[type=submit]")
    page.wait_for_url(re.compile(r".*/hub/home$"))


@pytest.fixture
def member(hub, new_project):
    slug = new_project({"gaelle": "analyst"})
    other = new_project({"henri": "analyst"})
    password = hub.add_user("gaelle")  # resets the password: we need it in clear once
    return slug, other, password


def test_french_by_default_with_only_my_projects(hub, chromium, member, artifacts):
    slug, other, password = member
    context = chromium.new_context(locale="fr-FR")
    page = context.new_page()
    log_in(page, hub, "gaelle", password)
    assert page.locator("h1 .hds-fr").is_visible()
    assert page.locator("h1 .hds-fr").inner_text() == "Mes projets"
    assert not page.locator("h1 .hds-en").is_visible()
    card = page.locator(f"section[data-project='{slug}']")
    assert card.is_visible()
    assert "Statistiques" in card.inner_text()
    assert page.locator(f"section[data-project='{other}']").count() == 0
    page.screenshot(path=str(artifacts / "home-fr.png"), full_page=True)
    context.close()


def test_english_when_the_browser_prefers_it(hub, chromium, member, artifacts):
    slug, _, password = member
    context = chromium.new_context(locale="en-US")
    page = context.new_page()
    log_in(page, hub, "gaelle", password)
    assert page.locator("h1 .hds-en").is_visible()
    assert not page.locator("h1 .hds-fr").is_visible()
    assert "Start" in page.locator(f"section[data-project='{slug}'] .hds-start").inner_text()
    page.screenshot(path=str(artifacts / "home-en.png"), full_page=True)
    context.close()


def test_start_button_opens_jupyterlab_in_the_project(hub, chromium, member, artifacts):
    slug, _, password = member
    context = chromium.new_context(locale="fr-FR")
    page = context.new_page()
    log_in(page, hub, "gaelle", password)
    page.click(f"section[data-project='{slug}'] .hds-start")
    page.wait_for_url(re.compile(rf".*/user/gaelle/{slug}/lab.*"), timeout=120_000)
    # The file browser shows the project's three areas, and nothing of the image.
    listing = page.locator(".jp-DirListing-content")
    for folder in ("data", "outputs", "work"):
        listing.locator(f".jp-DirListing-item[title^='Name: {folder}']").wait_for(timeout=120_000)
    names = sorted(listing.locator(".jp-DirListing-itemName").all_inner_texts())
    assert names == ["data", "outputs", "work"]
    page.screenshot(path=str(artifacts / "lab-after-start.png"))
    context.close()
    session = hub.as_user(hub.user_token("gaelle"))
    from tests.integration.conftest import stop_server

    stop_server(hub, session, "gaelle", slug)
