"""The page in Chromium (Playwright): generate, stop, compare, vote; screenshots of each tab.

Screenshots (1400x1000) go to test-artifacts/: app-playground.png, app-playground-stopped.png,
app-side-by-side.png, app-side-by-side-voted.png.
"""
from __future__ import annotations

import re
import shutil

import pytest

from test_app_support import CountingLock, tiny_app, tiny_experts  # noqa: F401  (fixtures)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page(tiny_app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(60_000)
        page.goto(tiny_app[0])
        page.wait_for_selector("#pg-generate")
        yield page
        browser.close()


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def answer_text(page) -> str:
    return page.locator("#pg-answer textarea").input_value()


def test_generate_then_stop(page, artifacts, tiny_app, monkeypatch):
    from playwright.sync_api import expect

    page.locator("#pg-prompt textarea").fill("Give three tips for staying healthy.")
    set_number(page, "pg-temperature", 1)
    set_number(page, "pg-max-tokens", 12)
    page.locator("#pg-generate").click()
    expect(page.locator("#pg-status")).to_contain_text("tokens", timeout=60_000)
    assert answer_text(page).strip()                              # text appeared
    expect(page.locator("#pg-status")).to_contain_text(re.compile(r"12 tokens .* token limit"))
    page.screenshot(path=str(artifacts / "app-playground.png"))

    # a long answer (20 ms per forward pass: 1024 tokens would take > 20 s), stopped while it streams
    counter = CountingLock(delay=0.02)
    monkeypatch.setattr(tiny_app[1], "model_lock", counter)
    set_number(page, "pg-max-tokens", 1024)
    page.locator("#pg-prompt textarea").fill("Tell me a very long story about the sea.")
    page.locator("#pg-generate").click()
    expect(page.locator("#pg-status")).to_have_text("")          # the previous run's line is cleared
    page.wait_for_function("() => document.querySelector('#pg-answer textarea').value.length > 20")
    page.locator("#pg-stop").click()
    expect(page.locator("#pg-status")).to_contain_text("stopped")
    status = page.locator("#pg-status").inner_text()
    match = re.search(r"(\d+) tokens", status)
    assert match, status
    tokens = int(match.group(1))
    assert 0 < tokens < 1024
    page.wait_for_timeout(500)
    passes, frozen = counter.passes, answer_text(page)
    page.wait_for_timeout(1000)
    assert counter.passes == passes < 1024                         # the model stopped
    assert answer_text(page) == frozen                            # and nothing streams after Stop
    page.screenshot(path=str(artifacts / "app-playground-stopped.png"))

    # the server still answers after a stop
    monkeypatch.undo()
    set_number(page, "pg-max-tokens", 5)
    page.locator("#pg-generate").click()
    expect(page.locator("#pg-status")).to_contain_text("5 tokens")


def leaderboard(page) -> dict[str, dict[str, int]]:
    """The table as shown: mode -> {helpful, harmless, honest, votes}."""
    cells = [c.strip() for c in page.locator("#leaderboard").inner_text().split("\n") if c.strip()]
    header = ["mode", "helpful", "harmless", "honest", "votes (shown in)"]
    start = cells.index("mode")          # after the progress text, if any
    assert cells[start:start + 5] == header, cells
    body = cells[start + 5:]
    return {body[i]: dict(zip(["helpful", "harmless", "honest", "votes"], map(int, body[i + 1:i + 5])))
            for i in range(0, len(body), 5)}


def test_compare_vote_updates_leaderboard(page, artifacts):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Side by side").click()
    page.locator("#sbs-prompt textarea").fill("Is the Earth flat?")
    page.locator("#sbs-compare").click()
    for mode in ("base", "expert-harmless", "expert-helpful", "expert-honest"):
        expect(page.locator(f"#col-{mode} .badge-state")).to_have_text(
            re.compile("end of turn|token limit"), timeout=90_000)
    assert page.locator("#col-expert-honest textarea").input_value().strip()
    page.screenshot(path=str(artifacts / "app-side-by-side.png"))

    expect(page.locator("#leaderboard-caption")).to_contain_text("votes for")
    before = leaderboard(page)
    assert set(before) == {"base", "expert:harmless", "expert:helpful", "expert:honest"}
    caption_before = page.locator("#leaderboard-caption").inner_text()
    page.locator("#col-expert-helpful .vote-helpful").click()
    expect(page.locator("#leaderboard-caption")).not_to_have_text(caption_before)
    for _ in range(100):                 # the table re-renders a moment after the caption
        after = leaderboard(page)
        if after != before:
            break
        page.wait_for_timeout(100)
    assert after["expert:helpful"]["helpful"] > before["expert:helpful"]["helpful"]
    for mode in ("base", "expert:harmless", "expert:honest"):
        assert after[mode]["helpful"] < before[mode]["helpful"]      # each lost to the winner
        assert after[mode]["votes"] == before[mode]["votes"] + 1
        assert after[mode]["honest"] == before[mode]["honest"]       # other axes untouched
    # the same axis twice for one comparison is refused with a message
    page.locator("#col-base .vote-helpful").click()
    expect(page.get_by_text("already voted on helpful")).to_be_visible()
    page.locator("#leaderboard").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "app-side-by-side-voted.png"))
