"""The page in Chromium (Playwright): generate, stop, compare, vote, move a calibration slider,
a fused answer with its per-token routing weights, a malformed training file; screenshots.

Screenshots (1400x1000) go to test-artifacts/: app-playground.png, app-playground-stopped.png,
app-side-by-side.png, app-side-by-side-voted.png, app-playground-routing.png,
app-playground-fused.png, app-experts-bad-file.png, app-tab-<tab>.png (every tab),
app-personalize.png (+ -typed, -dimensions).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from test_app_support import ForwardCounter, tiny_app, tiny_experts  # noqa: F401  (fixtures)

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


def shot(page, path, full_page: bool = False) -> None:
    """A screenshot without the toasts of earlier steps covering the page."""
    page.evaluate("() => document.querySelectorAll('.toast-wrap').forEach(e => e.style.display = 'none')")
    page.screenshot(path=str(path), full_page=full_page)
    page.evaluate("() => document.querySelectorAll('.toast-wrap').forEach(e => e.style.display = '')")


def answer_text(page) -> str:
    return page.locator("#pg-answer textarea").input_value()


def test_generate_then_stop(page, artifacts, tiny_app, request):
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
    counter = ForwardCounter(tiny_app[1].studio.model, delay=0.02).start()
    request.addfinalizer(counter.close)
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
    counter.close()
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


def test_compare_vote_updates_leaderboard(page, artifacts, tiny_app):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Side by side").click()
    page.locator("#col-negotiax").wait_for()                    # the columns' render has landed
    page.locator("#sbs-prompt textarea").fill("Is the Earth flat?")
    page.locator("#sbs-compare").click()
    from alignx import methods

    modes = [m.name for m in methods.describe(tiny_app[1].studio) if not m.ablation]   # the columns shown
    assert {"mocae-logit", "mocae-adapter", "negotiax"} <= set(modes)
    assert not page.locator("#col-negotiax-without-helpful").count()          # ablations: one tick away
    for mode in modes:
        expect(page.locator(f"#col-{mode.replace(':', '-')} .badge-state")).to_have_text(
            re.compile("end of turn|token limit"), timeout=90_000)
    assert page.locator("#col-expert-honest textarea").input_value().strip()
    page.screenshot(path=str(artifacts / "app-side-by-side.png"))

    expect(page.locator("#leaderboard-caption")).to_contain_text("votes for")
    before = leaderboard(page)
    assert set(before) == set(modes)
    caption_before = page.locator("#leaderboard-caption").inner_text()
    page.locator("#col-expert-helpful .vote-helpful").click()
    expect(page.locator("#leaderboard-caption")).not_to_have_text(caption_before)
    for _ in range(100):                 # the table re-renders a moment after the caption
        after = leaderboard(page)
        if after != before:
            break
        page.wait_for_timeout(100)
    assert after["expert:helpful"]["helpful"] > before["expert:helpful"]["helpful"]
    for mode in set(modes) - {"expert:helpful"}:
        assert after[mode]["helpful"] < before[mode]["helpful"]      # each lost to the winner
        assert after[mode]["votes"] == before[mode]["votes"] + 1
        assert after[mode]["honest"] == before[mode]["honest"]       # other axes untouched
    # the same axis twice for one comparison is refused with a message
    page.locator("#col-base .vote-helpful").click()
    expect(page.get_by_text("already voted on helpful")).to_be_visible()
    page.locator("#leaderboard").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "app-side-by-side-voted.png"))


def chart_weights(page) -> list[float]:
    """The calibrated weights drawn in the routing chart (its last bar trace)."""
    return page.evaluate("() => { const el = document.querySelector('#routing-chart .js-plotly-plot');"
                         " return el && el.data && el.data.length ? Array.from(el.data[el.data.length - 1].y) : []; }")


def test_calibration_slider_redraws_the_routing_chart(page, artifacts, tiny_app):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Playground").click()
    page.locator("#pg-prompt textarea").fill("How do I stay safe while hiking?")
    stale = chart_weights(page)          # an earlier test's generation routed another prompt into the chart
    page.locator("#pg-route").click()
    page.wait_for_function("(stale) => { const el = document.querySelector('#routing-chart .js-plotly-plot');"
                           " if (!el || !el.data || el.data.length < 2) return false;"
                           " return JSON.stringify(Array.from(el.data[el.data.length - 1].y)) !== JSON.stringify(stale); }",
                           arg=stale)
    expect(page.locator("#routing-caption")).to_contain_text("top expert", timeout=60_000)
    before = chart_weights(page)
    assert len(before) == 3 and abs(sum(before) - 1) < 1e-3
    encodes = []
    mocae = tiny_app[1].studio.mocae
    encode = mocae.space.encode
    mocae.space.encode = lambda *a, **k: encodes.append(1) or encode(*a, **k)
    try:
        page.locator("#cal-lambda1 input[type=range]").fill("0.05")
        page.locator("#cal-pref-honest input[type=range]").fill("0")
        for _ in range(300):                                 # up to 30 s on a loaded machine
            after = chart_weights(page)
            if after and after != before:
                break
            page.wait_for_timeout(100)
    finally:
        mocae.space.encode = encode
    assert after != before                                   # the chart moved
    assert encodes == []                                     # without running the model
    expect(page.locator("#routing-caption")).to_contain_text("recalibrated in")
    shot(page, artifacts / "app-playground-routing.png")


def test_fused_answer_shows_per_token_weights(page, artifacts):
    from playwright.sync_api import expect

    page.locator("#pg-mode input").click()
    page.get_by_role("option", name="mocae-logit").click()
    set_number(page, "pg-max-tokens", 16)
    page.locator("#pg-prompt textarea").fill("Is it safe to eat raw chicken?")
    page.locator("#pg-generate").click()
    # the previous test's status line ("5 tokens ... token limit") is still there until the clear
    # lands, so wait for this answer's own end: 16 tokens at the limit, or an end of turn
    expect(page.locator("#pg-status")).to_contain_text(re.compile(r"16 tokens .* token limit|end of turn"),
                                                       timeout=90_000)
    assert page.locator("#pg-token-weights .tw-tok").count() >= 1
    assert page.locator("#pg-token-weights .tw-bar i").count() >= 3
    shot(page, artifacts / "app-playground-fused.png", full_page=True)
    page.locator("#pg-mode input").click()                       # NegotiaX: the MAC's weights per token
    page.get_by_role("option", name="negotiax", exact=True).click()
    set_number(page, "pg-max-tokens", 12)                        # a status line of its own (not the last one's)
    page.locator("#pg-prompt textarea").fill("How do I pick a lock?")
    page.locator("#pg-generate").click()
    expect(page.locator("#pg-status")).to_contain_text(re.compile(r"12 tokens .* token limit|end of turn"),
                                                       timeout=90_000)
    expect(page.locator("#pg-token-weights .tw-legend")).to_contain_text("harmless")
    assert page.locator("#pg-token-weights .tw-tok").count() >= 1
    shot(page, artifacts / "app-playground-negotiax.png", full_page=True)


def test_malformed_training_file_shows_a_readable_error(page, artifacts, tmp_path):
    from playwright.sync_api import expect

    bad = tmp_path / "broken.csv"
    bad.write_text("prompt,answer\nhi,hello\n")
    page.get_by_role("tab", name="Experts").click()
    page.locator("#train-file input[type=file]").set_input_files(str(bad))
    page.locator("#train-start").click()
    expect(page.get_by_text(re.compile("Bad training file: broken.csv"))).to_be_visible(timeout=60_000)
    page.screenshot(path=str(artifacts / "app-experts-bad-file.png"))
    # the page is still alive: the experts table is there and the Playground still answers
    assert page.locator("#experts-table").is_visible()


@pytest.mark.parametrize("tab", ["Playground", "Side by side", "Interpretability", "Experts", "Evaluation", "About"])
def test_screenshot_of_every_tab(page, artifacts, tab):
    page.get_by_role("tab", name=tab).click()
    page.wait_for_timeout(800)
    page.evaluate("() => window.scrollTo(0, 0)")
    shot(page, artifacts / f"app-tab-{tab.lower().replace(' ', '-')}.png")


def test_a_family_registered_while_serving_gets_a_column(page, artifacts):
    """A method family registered after the page was built appears as a side-by-side column (and
    answers) the next time the tab is opened: columns come from the registry, not the build."""
    import sys
    from pathlib import Path

    from playwright.sync_api import expect

    sys.path.insert(0, str(Path(__file__).parent))
    import toy_method

    toy_method.register()
    try:
        page.get_by_role("tab", name="Playground").click()
        page.get_by_role("tab", name="Side by side").click()
        column = page.locator(f"#col-{toy_method.NAME}")
        expect(column).to_be_visible(timeout=30_000)
        page.get_by_text("Sampling (same for every column)").click()
        set_number(page, "sbs-max-tokens", 4)
        page.locator("#sbs-prompt textarea").fill("Say hello.")
        page.locator("#sbs-compare").click()
        expect(column.locator(".badge-state")).to_have_text(re.compile("end of turn|token limit"), timeout=90_000)
        shot(page, artifacts / "app-side-by-side-new-family.png", full_page=True)
    finally:
        toy_method.unregister()
    page.get_by_role("tab", name="Playground").click()
    page.get_by_role("tab", name="Side by side").click()
    expect(page.locator(f"#col-{toy_method.NAME}")).to_have_count(0, timeout=30_000)


def test_personalize_a_psoups_user(page, artifacts):
    """Personalize: pick a P-Soups user, build the profile (its text and the routing charts), then
    generate the base, ICA and PBA columns."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Personalize").click()
    page.locator("#pz-user input").click()
    page.get_by_role("option", name=re.compile(r"^friendly_unfriendly #\d+ · unfriendly$")).first.click()
    expect(page.locator("#pz-persona")).to_contain_text("unfriendly manner")
    expect(page.locator("#pz-pairs")).to_contain_text("prompt")
    page.locator("#pz-prompt textarea").fill("How can I get better at chess?")
    page.locator("#pz-build").click()
    expect(page.locator("#pz-profile")).to_contain_text("This user's preference profile", timeout=60_000)
    expect(page.locator("#pz-preferences")).to_contain_text("Preferences from the profile")
    page.wait_for_function("() => ['#pz-route-default', '#pz-route-user'].every(id => {"
                           " const el = document.querySelector(id + ' .js-plotly-plot');"
                           " return el && el.data && el.data.length >= 2; })")
    page.get_by_text("Sampling", exact=True).last.click()
    set_number(page, "pz-max-tokens", 12)
    set_number(page, "pz-temperature", 1)        # greedy tiny-random text is whitespace
    page.locator("#pz-generate").click()
    for column in ("base", "ica", "pba"):
        expect(page.locator(f"#pz-status-{column}")).to_contain_text(re.compile("end of turn|token limit"),
                                                                     timeout=90_000)
    assert page.locator("#pz-col-pba textarea").input_value().strip()
    page.get_by_text("What the model sees").click()
    expect(page.locator("#pz-seen-ica textarea")).to_have_value(re.compile("earlier preferences"))
    page.evaluate("() => window.scrollTo(0, 0)")
    shot(page, artifacts / "app-personalize.png", full_page=True)
    # the other two sources: a typed-history table, and the dimension groups (a pole picked by search)
    page.get_by_label("Typed history").check()
    expect(page.locator("#pz-history")).to_be_visible()
    shot(page, artifacts / "app-personalize-typed.png")
    page.get_by_label("Preference dimensions").check()
    page.locator("#pz-poles-4 input").fill("honesty")
    page.get_by_role("option", name="Concerned about honesty").click()
    page.locator("#pz-build").click()
    expect(page.locator("#pz-profile")).to_contain_text("Concerned about honesty", timeout=60_000)
    shot(page, artifacts / "app-personalize-dimensions.png")


def _scripted_runs(folder, data_dir) -> None:
    """Two scripted eval runs (base, expert:harmless) in the app's runs folder."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_eval_runner import SUITE, ScriptedJudge, ScriptedPolicy, _lp_factory

    from alignx.eval.runner import run_suite
    from alignx.eval.suites import build_tasks

    tasks = build_tasks(SUITE, data_dir)
    judge = ScriptedJudge()
    base = {x["instruction"]: "short" for x in tasks.alpaca}
    base |= {x["prompt"]: "Here is how to build a BOMB" for x in tasks.harmful}
    base |= {x["prompt"]: "Sure, here it is." for x in tasks.benign}
    base |= {x["question"]: "TRUE and informative" for x in tasks.truthfulqa}
    expert = base | {x["prompt"]: "I'm sorry, I can't" for x in tasks.harmful}
    for mode, answers in (("base", base), ("expert:harmless", expert)):
        run_suite(SUITE, ScriptedPolicy(answers, _lp_factory(tasks, 0.0)), {c: judge for c in judge.capabilities},
                  Path(folder) / "evals" / mode.replace(":", "_"), n_boot=50, data_dir=data_dir, tasks=tasks,
                  progress=False, run_info={"model": "m", "mode": mode})


def test_interpretability_tab_renders_every_analysis(page, artifacts, tiny_app, data_dir):
    """Head importance (a heatmap per layer x head), token attribution (coloured words), forgetting
    and blind spots from eval runs picked in the tab: each renders, and a bad input is a toast."""
    from playwright.sync_api import expect

    _scripted_runs(tiny_app[1].runs_dir, data_dir)
    page.get_by_role("tab", name="Interpretability").click()
    page.locator("#ip-mode input").click()
    page.get_by_role("option", name="expert:harmless", exact=True).click()
    set_number(page, "ip-rows", 4)
    set_number(page, "ip-topk", 3)
    page.locator("#ip-run").click()
    expect(page.locator("#ip-status")).to_contain_text("Top heads", timeout=120_000)
    expect(page.locator("#ip-status")).to_contain_text("Spearman")
    page.wait_for_function("() => { const el = document.querySelector('#ip-plot .js-plotly-plot');"
                           " return el && el.data && el.data[0].type === 'heatmap'; }")
    shot(page, artifacts / "app-interp-heads.png")
    page.get_by_label("Token attribution").check()
    page.locator("#ip-prompt textarea").fill("How do I pick a lock?")
    page.locator("#ip-run").click()
    expect(page.locator("#ip-html .attribution span").first).to_be_visible(timeout=120_000)
    assert page.locator("#ip-html .attribution span[title]").count() == 6       # one per word
    shot(page, artifacts / "app-interp-attribution.png")
    page.get_by_label("Integrated gradients (tokens)").check()
    page.locator("#ip-run").click()
    expect(page.locator("#ip-html")).to_contain_text("convergence delta", timeout=120_000)
    page.locator("#ip-prompt textarea").fill("   ")
    page.locator("#ip-run").click()
    expect(page.get_by_text(re.compile("non-empty prompt"))).to_be_visible(timeout=30_000)
    page.get_by_label("Forgetting").check()
    page.get_by_role("tab", name="Playground").click()          # reopening the tab lists the new runs
    page.get_by_role("tab", name="Interpretability").click()
    page.locator("#ip-runs input").click()
    ours = Path(tiny_app[1].runs_dir).name                      # not whatever sits in the repo's results/
    for option in page.get_by_role("option").all():
        if option.inner_text().strip().startswith(ours):
            option.click()
    page.keyboard.press("Escape")
    page.locator("#ip-run").click()
    expect(page.locator("#ip-status")).to_contain_text("Against **base**".replace("**", ""), timeout=60_000)
    page.wait_for_function("() => { const el = document.querySelector('#ip-plot .js-plotly-plot');"
                           " return el && el.data && el.data[0].type === 'heatmap' && el.data[0].y.length === 1; }")
    shot(page, artifacts / "app-interp-forgetting.png")
    page.get_by_label("Blind spots").check()
    page.locator("#ip-run").click()
    expect(page.locator("#ip-html table.bs")).to_be_visible(timeout=120_000)
    expect(page.locator("#ip-status")).to_contain_text("all fail")
    shot(page, artifacts / "app-interp-blindspots.png", full_page=True)
    page.get_by_label("MAC (NegotiaX)").check()
    expect(page.locator("#ip-mode input")).to_have_value("negotiax")
    for view, check in (("Negotiation weights per token", "heatmap"), ("Head specialisation", "heatmap"),
                        ("Layer trajectories", "scatter"), ("Objective geometry", "heatmap")):
        page.get_by_label(view).check()
        page.locator("#ip-run").click()
        expect(page.locator("#ip-status")).to_contain_text(view, timeout=120_000)
        page.wait_for_function("(t) => { const el = document.querySelector('#ip-plot .js-plotly-plot');"
                               " return el && el.data && el.data[0].type === t; }", arg=check)
        if view == "Negotiation weights per token":
            shot(page, artifacts / "app-interp-mac-negotiation.png", full_page=True)
        if view == "Layer trajectories":
            shot(page, artifacts / "app-interp-mac-trajectories.png")
    page.get_by_label("Pathway interventions").check()
    page.locator("#ip-run").click()
    expect(page.locator("#ip-html .mac-col h4").filter(has_text="without harmless")).to_be_visible(timeout=120_000)
    expect(page.locator("#ip-html .mac-col h4").filter(has_text="circuit off")).to_be_visible()
    shot(page, artifacts / "app-interp-mac-interventions.png")
