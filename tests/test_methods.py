"""The method registry (``alignx.methods``), and what the issue calls done: a new family is one
package plus one ``register`` call, and then appears in the CLI, in eval, in the app's mode
dropdown and as a side-by-side column, with no edit to studio.py, eval/, cli/ or app/."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tiny_studio  # noqa: E402
import toy_method  # noqa: E402

from alignx import methods  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    return tiny_studio.build(tmp_path_factory.mktemp("experts"))


@pytest.fixture(scope="module")
def studio(experts):
    from alignx.studio import Studio

    return Studio.load("tiny-random", experts)


@pytest.fixture
def toy():
    toy_method.register()
    yield toy_method.NAME
    toy_method.unregister()


def test_builtin_families_and_their_modes(studio, tmp_path):
    from alignx.studio import Studio

    assert [f.name for f in methods.families()][:4] == ["base", "expert", "mocae", "personal"]
    assert methods.modes(studio) == ["base", "expert:harmless", "expert:helpful", "expert:honest", "mocae-logit",
                                     "mocae-adapter"]
    assert methods.modes(studio, include_unlisted=True)[6:8] == ["uniform-logit", "uniform-adapter"]
    assert methods.default_mode(studio) == "mocae-logit"          # the fusion, when a router is loaded
    bare = Studio.load("tiny-random", tmp_path)                    # no experts
    assert methods.modes(bare) == ["base"] and methods.default_mode(bare) == "base"
    assert "base | expert:NAME | mocae-logit" in methods.usage()


@pytest.mark.parametrize("mode, settings, message", [
    ("nope", {}, r"unknown mode 'nope'; available: base, expert:harmless"),
    ("expert:nope", {}, r"unknown expert 'nope'; available: harmless, helpful, honest"),
    ("base", {"lambda1": 0.5}, "takes no settings"),
    ("mocae-logit", {"lambda3": 0.5}, "unknown"),
    ("mocae-logit", {"lambda1": 2.0}, r"lambda1 must be in \[0, 1\]"),
    ("uniform-logit", {"lambda1": 0.5}, "takes no settings"),
    ("", {}, "non-empty"),
])
def test_bad_modes_and_settings_are_clear_errors(studio, mode, settings, message):
    from alignx.errors import AlignXError

    with pytest.raises(AlignXError, match=message):
        methods.policy(studio, mode, **settings)


def test_fusion_modes_without_a_router_say_why(experts):
    from alignx.studio import Studio

    no_router = Studio.load("tiny-random", experts, with_router=False)
    assert "mocae-logit" not in methods.modes(no_router)
    with pytest.raises(ValueError, match="needs experts and a trained router"):
        methods.policy(no_router, "mocae-logit")


def test_settings_reach_the_policy(studio):
    p = methods.policy(studio, "mocae-adapter", lambda1=0.9, preferences={"honest": 0.5})
    assert (p.calibration.lambda1, p.calibration.lambda2, p.calibration.preferences) == (0.9, 0.4, {"honest": 0.5})
    assert methods.policy(studio, "uniform-logit").fixed.tolist() == pytest.approx([1 / 3] * 3)


def test_registry_refuses_duplicates_and_names_what_is_available(toy):
    from alignx.errors import AlignXError

    with pytest.raises(AlignXError, match="already registered"):
        toy_method.register()
    with pytest.raises(AlignXError, match=r"unknown method family 'nope'; available: base, expert, mocae, negotiax, personal, tempered"):
        methods.get_family("nope")


def test_import_alignx_is_light_and_families_load_lazily():
    code = ("import sys, alignx; from alignx import methods; assert 'alignx.mocae' not in sys.modules, 'eager'; "
            "methods.get_family('base'); assert 'alignx.mocae' not in sys.modules; "
            "print([f.name for f in methods.families()])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['base', 'expert', 'mocae', 'personal', 'negotiax']"


def test_public_api():
    import alignx

    for name in ("Studio", "load_model", "Sampling", "Policy", "run_suite", "methods", "hooks", "AlignXError"):
        assert getattr(alignx, name) is not None, name
    assert issubclass(alignx.errors.InvalidInput, alignx.AlignXError)


def test_a_new_family_reaches_the_cli(toy, experts, capsys):
    from alignx.cli import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "tempered" in capsys.readouterr().out
    assert main(["generate", "--mode", toy, "--model", "tiny-random", "--experts-dir", str(experts),
                 "--max-new-tokens", "3", "--temperature", "0", "hello"]) == 0
    capsys.readouterr()
    assert main(["generate", "--mode", "nope", "--model", "tiny-random", "--experts-dir", str(experts), "hi"]) == 2
    err = capsys.readouterr().err
    assert "unknown mode 'nope'; available: base, expert:harmless" in err and "tempered" in err
    assert len(err.strip().splitlines()) == 1                      # one line, no traceback


def test_a_new_family_reaches_eval(toy, experts, tmp_path):
    from alignx.cli import main
    from alignx.eval.judges.base import register_judge
    from alignx.eval.suites import Suite, register_suite
    from test_app_tabs import ConstantJudge

    register_judge("constant-test", ConstantJudge)
    register_suite(Suite("toy-test", "two items of each part", alpaca_n=2, reference="h3fusion",
                         harmful={"I-CoNa": 2}, benign={"I-Alpaca": 2}, truthfulqa_n=2, mc_n=2,
                         pairs_n={"helpful": 2, "harmless": 2, "honest": 2}, max_new_tokens=4))
    assert main(["eval", "--suite", "toy-test", "--mode", toy, "--judge", "constant-test", "--out", str(tmp_path),
                 "--model", "tiny-random", "--experts-dir", str(experts), "--bootstrap", "20", "--no-progress",
                 "--ref-cache", "none"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["run"]["mode"] == toy and report["alignment_accuracy"]["value"] is not None


def test_a_new_family_reaches_the_app(toy, studio, tmp_path):
    from gradio_client import Client

    from alignx.arena import VoteStore
    from app.context import AppContext
    from app.ui import build_demo, launch
    from test_app_support import free_port

    demo = build_demo(AppContext(studio, VoteStore(tmp_path / "votes.sqlite"), runs_dir=tmp_path / "runs"))
    try:
        by_id = {c["props"].get("elem_id"): c["props"] for c in demo.config["components"]}
        assert toy in [c[0] if isinstance(c, (list, tuple)) else c for c in by_id["pg-mode"]["choices"]]
        assert toy in [c[0] if isinstance(c, (list, tuple)) else c for c in by_id["sbs-columns"]["choices"]]
        assert by_id["pg-mode"]["value"] == "mocae-logit"
        _, url, _ = launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                           quiet=True, share=False)
        answers = Client(url, verbose=False).predict("hello", 3, 0.0, 1.0, 0, api_name="/compare")
        assert toy in answers and isinstance(answers[toy], str)
    finally:
        demo.close()
