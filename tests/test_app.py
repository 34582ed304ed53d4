"""The app driven through its API (gradio_client), its entry point, and one real-model stream."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from test_app_support import ForwardCounter, free_port, tiny_app, tiny_experts  # noqa: F401  (fixtures)

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
MODES = ["base", "expert:harmless", "expert:helpful", "expert:honest", "mocae-logit", "mocae-adapter", "negotiax"]


def text(result) -> str:
    """The answer of a ``/generate`` result: (answer, per-token routing weights HTML)."""
    assert isinstance(result, (tuple, list)) and len(result) == 2, result
    assert isinstance(result[0], str) and isinstance(result[1], str)
    return result[0]


def load_entry_point():
    """``app.py`` as a module (``import app`` finds the ``app/`` package)."""
    spec = importlib.util.spec_from_file_location("alignx_app_entry", REPO / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def client(tiny_app):
    from gradio_client import Client

    return Client(tiny_app[0], verbose=False)


def test_api_lists_the_named_endpoints(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/generate", "/stop", "/compare", "/vote", "/leaderboard"} <= set(api)
    params = [p["parameter_name"] for p in api["/generate"]["parameters"]]
    assert params[:5] == ["prompt", "mode", "max_new_tokens", "temperature", "top_p"]


def test_generate_streams_text(client):
    job = client.submit("Give three tips", "expert:honest", 12, 1.0, 1.0, api_name="/generate")
    final = text(job.result(timeout=120))
    updates = [text(u) for u in job.outputs()]
    assert final.strip()
    assert len(updates) > 2                          # streamed, not one final answer
    assert all(final.startswith(u.strip()) or not u.strip() for u in updates)


def test_generate_is_reproducible_with_a_seed(client):
    args = ("Is the Earth flat?", "base", 10, 1.0, 0.9, 7)
    assert client.predict(*args, api_name="/generate") == client.predict(*args, api_name="/generate")


@pytest.mark.parametrize("args, message", [
    (("hi", "base", 0, 0.0, 1.0), "minimum"),                    # max_new_tokens = 0
    (("hi", "expert:nope", 5, 0.0, 1.0), "not in the list of choices"),
    (("hi", "base", 5, 0.0, 0.0), "minimum"),                   # top_p below the slider's range
    (("   ", "base", 5, 0.0, 1.0), "Type a prompt"),
    (("hi", "base", 5, 3.0, 1.0), "maximum"),                   # temperature above the range
])
def test_bad_generate_input_is_an_error_and_the_server_keeps_serving(client, args, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/generate")
    assert isinstance(text(client.predict("hi", "base", 2, 0.0, 1.0, api_name="/generate")), str)


def test_compare_vote_leaderboard(client, tiny_app):
    _, ctx = tiny_app
    answers = client.predict("Is the Earth flat?", 8, 1.0, 1.0, 0, api_name="/compare")
    assert list(answers) == MODES and all(isinstance(a, str) for a in answers.values())
    before = client.predict(api_name="/leaderboard")
    n = before["votes"]
    board = client.predict("Is the Earth flat?", answers, "expert:honest", "honest", api_name="/vote")
    assert board["model"] == "tiny-random" and board["votes"] == n + 1
    assert board["k"] == 32 and board["initial"] == 1000
    assert set(board["axes"]) == {"helpful", "harmless", "honest"}
    honest = {row["mode"]: row for row in board["axes"]["honest"]}
    old = {row["mode"]: row for row in before["axes"]["honest"]}
    assert set(honest) == set(MODES)
    assert honest["expert:honest"]["elo"] > old["expert:honest"]["elo"]
    assert honest["expert:honest"]["wins"] == old["expert:honest"]["wins"] + 1
    assert all(honest[m]["elo"] < old[m]["elo"] for m in MODES if m != "expert:honest")
    assert client.predict(api_name="/leaderboard") == board
    stored = ctx.votes.votes("tiny-random")[-1]
    assert stored.answers == answers and stored.meta == {"source": "api"}


@pytest.mark.parametrize("winner, axis, answers, message", [
    ("expert:honest", "funny", None, "unknown axis"),
    ("nobody", "helpful", None, "not one of the compared modes"),
    ("base", "helpful", {"base": "x"}, "at least two"),
])
def test_bad_vote_is_an_error(client, winner, axis, answers, message):
    from gradio_client.exceptions import AppError

    answers = answers or {m: "x" for m in MODES}
    n = client.predict(api_name="/leaderboard")["votes"]
    with pytest.raises(AppError, match=message):
        client.predict("p", answers, winner, axis, api_name="/vote")
    assert client.predict(api_name="/leaderboard")["votes"] == n


def test_many_users_at_once_are_queued_not_refused(tiny_app):
    from gradio_client import Client

    def one(i):
        c = Client(tiny_app[0], verbose=False)
        return text(c.predict(f"prompt {i}", "base", 6, 1.0, 1.0, i, api_name="/generate"))

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    assert len(results) == 4 and all(isinstance(r, str) for r in results)


def test_cancel_really_stops_the_model(client, tiny_app, request):
    _, ctx = tiny_app
    counter = ForwardCounter(ctx.studio.model).start()
    request.addfinalizer(counter.close)
    # greedy tiny-random never emits end-of-turn: without the cancel this runs 1024 passes
    job = client.submit("Tell me a long story", "base", 1024, 0.0, 1.0, api_name="/generate")
    deadline = time.time() + 60
    while counter.passes < 20 and time.time() < deadline:
        time.sleep(0.01)
    job.cancel()
    time.sleep(1.0)
    after_cancel = counter.passes
    time.sleep(1.0)
    assert counter.passes == after_cancel < 1024          # no forward pass after the cancel settled
    assert not [t for t in threading.enumerate() if t.name == "alignx-generation"]
    assert isinstance(text(client.predict("hi", "base", 2, 0.0, 1.0, api_name="/generate")), str)


# --- entry point ---------------------------------------------------------------------------------
def test_parse_args_defaults_and_environment(monkeypatch):
    entry = load_entry_point()
    for var in ("SPACE_ID", "ALIGNX_MODEL", "ALIGNX_AUTH", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(var, raising=False)
    args = entry.parse_args([])
    assert (args.host, args.port, args.model, args.auth, args.share, args.concurrency) == \
        ("127.0.0.1", 7860, "smollm2-135m-instruct", None, False, 1)
    monkeypatch.setenv("SPACE_ID", "someone/alignx")
    monkeypatch.setenv("ALIGNX_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")
    monkeypatch.setenv("ALIGNX_AUTH", "ana:s3cret:x")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    args = entry.parse_args([])
    assert (args.host, args.port, args.model, args.auth) == \
        ("0.0.0.0", 7999, "HuggingFaceTB/SmolLM2-135M-Instruct", ("ana", "s3cret:x"))
    assert entry.parse_args(["--host", "10.0.0.2"]).host == "10.0.0.2"
    for bad in (["--auth", "nopassword"], ["--concurrency", "0"]):
        with pytest.raises(SystemExit):
            entry.parse_args(bad)
    assert entry.is_hub_id("owner/name") and not entry.is_hub_id("./models/x") and not entry.is_hub_id("tiny-random")


def run_py(*args, timeout=120):
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def test_help_of_app_and_cli():
    app_help = run_py("app.py", "--help")
    assert app_help.returncode == 0, app_help.stderr
    for flag in ("--host", "--port", "--model", "--experts-dir", "--share", "--auth", "--concurrency"):
        assert flag in app_help.stdout
    cli_help = run_py("-m", "alignx", "--help")
    assert cli_help.returncode == 0, cli_help.stderr
    assert "generate" in cli_help.stdout


def test_app_py_serves_with_auth(tmp_path, tiny_experts):
    """The real entry point in its own process: loads, binds the given port, asks for a login."""
    from gradio_client import Client

    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", ALIGNX_AUTH="ana:pw")
    proc = subprocess.Popen([sys.executable, "app.py", "--model", "tiny-random", "--port", str(port),
                             "--experts-dir", str(tiny_experts), "--votes-db", str(tmp_path / "v.sqlite")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        log = []
        for line in proc.stdout:
            log.append(line)
            if "Running on local URL" in line:
                break
        else:
            pytest.fail("app.py exited:\n" + "".join(log))
        assert any("modes: base, expert:harmless, expert:helpful, expert:honest" in x for x in log), log
        with pytest.raises(Exception):
            Client(url, verbose=False)                      # no login, no API
        client = Client(url, auth=("ana", "pw"), verbose=False)
        assert isinstance(text(client.predict("hi", "base", 3, 0.0, 1.0, api_name="/generate")), str)
        assert (tmp_path / "v.sqlite").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bad_model_is_one_clear_error():
    result = run_py("app.py", "--model", "./no/such/model", "--port", str(free_port()))
    assert result.returncode == 2
    assert re.search(r"error: .*neither a local model folder nor a hub id", result.stderr), result.stderr


# --- the real default model -------------------------------------------------------------------------
@pytest.mark.slow
def test_real_model_streams_an_answer(tmp_path):
    from gradio_client import Client

    from alignx.arena import VoteStore
    from alignx.studio import Studio
    from app.context import AppContext
    from app.ui import build_demo, launch

    studio = Studio.load("smollm2-135m-instruct", device="cpu")
    demo = build_demo(AppContext(studio, VoteStore(tmp_path / "v.sqlite")))
    _, url, _ = launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                       quiet=True)
    try:
        job = Client(url, verbose=False).submit("What is the capital of France?", "base", 40, 0.0, 1.0,
                                                api_name="/generate")
        answer = text(job.result(timeout=180))
        assert "Paris" in answer
        assert len(job.outputs()) > 3          # token by token
    finally:
        demo.close()


@pytest.mark.slow
def test_unreachable_hub_falls_back_to_the_offline_default(caplog):
    entry = load_entry_point()
    studio, notice = entry.load_studio("HuggingFaceTB/no-such-model-offline", None, "cpu")
    assert studio.lm.name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "offline default" in notice and any("offline default" in r.message for r in caplog.records)
    with pytest.raises(Exception, match="neither a local model folder"):
        entry.load_studio("./no/such/model", None, "cpu")


def test_interpret_api_attributes_and_names_bad_input(client):
    from gradio_client.exceptions import AppError

    args = ["Token attribution", "base", "helpful", 4, 0, False, "How do I bake bread?", "Sure, here",
            "Feature ablation (words)", "(none)", [], 0.8]
    _, html_out, status, result = client.predict(*args, api_name="/interpret")
    assert "attribution" in html_out and len(result["scores"]) == 5 and "feature_ablation" in status
    for changed, message in ((0, "'X'.*not in the list of choices"), (6, "non-empty prompt"),
                             (8, "'Letters'.*not in the list of choices"), (1, "nope is not in the list of choices")):
        bad = list(args)
        bad[changed] = {0: "X", 6: "  ", 8: "Letters", 1: "nope"}[changed]
        with pytest.raises(AppError, match=message):
            client.predict(*bad, api_name="/interpret")
    bad = list(args)
    bad[0], bad[10] = "Forgetting", ["/etc"]
    with pytest.raises(AppError, match="'/etc'.*not in the list of choices"):     # gradio's check, then ours
        client.predict(*bad, api_name="/interpret")
