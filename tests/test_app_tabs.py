"""Phase-2 endpoints through gradio_client: routing, recalibration, fused generation, experts
(load, train on an upload, bad files), evaluation; bad inputs are errors and the server keeps serving.

The router is the real ``alignx.mocae.MoCaE`` fitted on a few rows for the tiny model (test_app_support).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_app_support import tiny_app, tiny_experts  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def client(tiny_app):
    from gradio_client import Client

    return Client(tiny_app[0], verbose=False)


def app_error():
    from gradio_client.exceptions import AppError

    return AppError


def test_phase2_endpoints_are_listed_with_defaults(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/route", "/recalibrate", "/generate", "/compare", "/vote", "/evaluate", "/load_expert",
            "/train_expert", "/cancel_training"} <= set(api)
    params = {p["parameter_name"]: p for p in api["/recalibrate"]["parameters"]}
    assert list(params) == ["lambda1", "lambda2", "temperature", "helpful", "harmless", "honest"]
    assert all(p["parameter_has_default"] for p in params.values())
    assert [p["parameter_name"] for p in api["/route"]["parameters"]] == ["prompt"]


def test_route_then_recalibrate_without_rerunning_the_model(tiny_app, monkeypatch):
    from gradio_client import Client

    mocae = tiny_app[1].studio.mocae
    encodes = []
    encode = mocae.space.encode
    monkeypatch.setattr(mocae.space, "encode", lambda *a, **k: encodes.append(1) or encode(*a, **k))
    default_calibration = mocae.calibration
    c = Client(tiny_app[0], verbose=False)
    with pytest.raises(app_error(), match="Route a prompt first"):
        c.predict(api_name="/recalibrate")
    routed = c.predict("How do I bake bread?", api_name="/route")
    assert routed["prompt"] == "How do I bake bread?"
    assert set(routed["probabilities"]) == {"harmless", "helpful", "honest"}
    assert sum(routed["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert sum(routed["router_probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert "cluster" in routed and "settings" in routed and "calibration_term" in routed
    assert encodes == [1]
    default = c.predict(api_name="/recalibrate")
    assert default["probabilities"] == pytest.approx(routed["probabilities"], abs=1e-5)
    honest_only = c.predict(0.0, 1.0, 1.0, 0.0, 0.0, 1.0, api_name="/recalibrate")
    w = honest_only["probabilities"]
    assert w["honest"] > max(w["helpful"], w["harmless"]) and w["honest"] > default["probabilities"]["honest"]
    hot = c.predict(1.0, 0.0, 5.0, api_name="/recalibrate")
    assert max(hot["router_probabilities"].values()) < max(routed["router_probabilities"].values())
    assert hot["settings"]["temperature"] == 5.0
    assert encodes == [1]                                  # no model run for any recalibration
    assert hot["server_ms"] < 50
    assert mocae.calibration == default_calibration       # the shared default is left alone


def test_sessions_keep_their_own_routed_prompt(tiny_app):
    from gradio_client import Client

    a, b = Client(tiny_app[0], verbose=False), Client(tiny_app[0], verbose=False)
    ra = a.predict("first prompt", api_name="/route")
    b.predict("a different prompt", api_name="/route")
    again = a.predict(api_name="/recalibrate")
    assert again["prompt"] == "first prompt"
    assert again["probabilities"] == pytest.approx(ra["probabilities"], abs=1e-5)


@pytest.mark.parametrize("args, message", [
    ((1.5, 0.4, 1.0), "lambda1 and lambda2 must be in"),
    ((0.0, 0.0, 1.0), "cannot both be 0"),
    ((0.6, 0.4, 0.0), "temperature must be in"),
    ((0.6, 0.4, 1.0, 0.0, 0.0, 0.0), "not all zero"),
    ((0.6, 0.4, 1.0, -1.0), r"preferences must be in \[0, 1\]"),
])
def test_bad_calibration_is_an_error_and_the_server_keeps_serving(client, args, message):
    client.predict("Is the Earth flat?", api_name="/route")
    with pytest.raises(app_error(), match=message):
        client.predict(*args, api_name="/recalibrate")
    assert client.predict(api_name="/recalibrate")["prompt"] == "Is the Earth flat?"


def test_route_needs_a_prompt(client):
    with pytest.raises(app_error(), match="Type a prompt"):
        client.predict("   ", api_name="/route")


def test_fused_generation_streams_per_token_weights(client):
    job = client.submit("Give three tips", "mocae-logit", 6, 0.0, 1.0, 0, 0.5, 0.5, 1.0, 0.2, 0.3, 0.5,
                        api_name="/generate")
    text, weights = job.result(timeout=120)
    assert isinstance(text, str)
    assert 1 <= weights.count('class="tw-tok"') <= 6        # one weight bar per generated token
    assert all(axis in weights for axis in ("helpful", "harmless", "honest"))
    plain_text, plain_weights = client.predict("Give three tips", "expert:honest", 4, 0.0, 1.0, api_name="/generate")
    assert plain_weights == ""                              # single experts do not route


# --- experts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("choice, message", [
    ("../etc", "no paths"),
    ("runs/../../x", "no paths"),
    ("helpful/../../x", "no paths"),
    ("nope", "not an adapter folder"),
    ("", "Pick an adapter folder"),
])
def test_load_expert_refuses_paths_and_unknown_names(client, choice, message):
    with pytest.raises(app_error(), match=message):
        client.predict(choice, api_name="/load_expert")


def test_train_on_a_bad_file_is_a_readable_error(client, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"prompt": "hi", "response": "hello"}\n{"prompt": "no response here"}\n')
    with pytest.raises(app_error(), match=r"Bad training file: broken.jsonl, row \d+.*response"):
        client.predict("helpful", "bad-one", "tiny", "uploaded file", handle_file(str(bad)), api_name="/train_expert")
    with pytest.raises(app_error(), match="Expert name"):
        client.predict("helpful", "../up", "tiny", "data directory", None, api_name="/train_expert")


def test_train_an_expert_on_an_upload_then_load_it(client, tiny_app, tmp_path):
    from gradio_client import handle_file

    ctx = tiny_app[1]
    rows = [{"prompt": f"What is {i} + {i}?", "response": f"{i} + {i} = {2 * i}."} for i in range(12)]
    good = tmp_path / "sums.json"
    good.write_text(json.dumps(rows))
    job = client.submit("helpful", "sums", "tiny", "uploaded file", handle_file(str(good)), api_name="/train_expert")
    _, status = job.result(timeout=240)
    assert "Done" in status and "runs/sums" in status
    card = json.loads((Path(ctx.runs_dir) / "sums" / "card.json").read_text())
    assert card["steps"] == 2 and card["data"]["train_rows"] >= 2 and card["name"] == "sums"
    table, _, _ = client.predict("runs/sums", api_name="/load_expert")
    assert "sums" in ctx.studio.experts and "expert:sums" in ctx.studio.modes()
    assert any(row[0] == "sums" for row in table["data"])
    text, _ = client.predict("What is 2 + 2?", "expert:sums", 3, 0.0, 1.0, api_name="/generate")
    assert isinstance(text, str)
    with pytest.raises(app_error(), match="already loaded|not an adapter folder"):
        client.predict("runs/sums", api_name="/load_expert")


# --- evaluation --------------------------------------------------------------------------------
class ConstantJudge:
    """Answers 0.25 to everything: makes the suite run without the real judges' feature model."""

    name, proxy, symmetric_preference = "constant-test", True, True
    capabilities = frozenset({"prefer", "unsafe", "refusal", "truthful", "informative"})

    def info(self):
        return {"name": self.name, "version": "test", "proxy": True, "capabilities": sorted(self.capabilities)}

    def version_for(self, capability):
        return "test"

    def warning_for(self, capability):
        return None

    def _p(self, *seqs, **kw):
        return [0.25] * len(seqs[0])

    prefer = unsafe = refusal = informative = _p

    def truthful(self, questions, answers, references=None):
        return [0.75] * len(questions)


@pytest.fixture(scope="module")
def tiny_suite():
    from alignx.eval.judges.base import register_judge
    from alignx.eval.suites import Suite, register_suite

    register_judge("constant-test", ConstantJudge)
    register_suite(Suite("app-test", "two items of each part", alpaca_n=2, reference="h3fusion",
                         harmful={"I-CoNa": 2}, benign={"I-Alpaca": 2}, truthfulqa_n=2, mc_n=2,
                         pairs_n={"helpful": 2, "harmless": 2, "honest": 2}, max_new_tokens=4))
    return "app-test"


def test_evaluate_returns_metrics_with_cis_and_judges(client, tiny_suite):
    out = client.predict(["base", "expert:honest"], tiny_suite, "constant-test", api_name="/evaluate")
    assert set(out) == {"base", "expert:honest"}
    for mode, metrics in out.items():
        for key in ("win_rate", "safety_score", "over_refusal", "ti", "mc1", "mc2", "alignment_accuracy",
                    "average_alignment_score"):
            entry = metrics[key]
            assert set(entry) >= {"value", "ci95", "judge"}, (mode, key)
            if entry["value"] is not None:
                lo, hi = entry["ci95"]
                assert lo <= entry["value"] <= hi
        assert metrics["safety_score"]["judge"].startswith("constant-test")
        assert metrics["mc1"]["judge"] == "none (log-likelihood)"
        assert any("proxy" in w for w in metrics["warnings"])


@pytest.mark.parametrize("args, message", [
    (([], "quick", "offline"), "at least one mode"),
    ((["expert:nope"], "quick", "offline"), "Unknown mode"),
    ((["base"], "huge", "offline"), "Unknown suite"),
    ((["base"], "quick", "oracle"), "Unknown judge"),
])
def test_bad_evaluate_input_is_an_error(client, args, message):
    with pytest.raises(app_error(), match=message):
        client.predict(*args, api_name="/evaluate")
    assert client.predict(api_name="/leaderboard")["model"] == "tiny-random"


def test_about_describes_every_built_in_family():
    """The About tab's modes table names a mode of each built-in method family, and NegotiaX's
    formulas sit beside MoCaE's."""
    from types import SimpleNamespace

    from alignx.methods.registry import _BUILTIN
    from app.tabs.about import markdown

    text = markdown(SimpleNamespace(model_name="m"))
    example = {"base": "`base`", "expert": "`expert:helpful`", "mocae": "`mocae-logit`",
               "personal": "`personal-ica`", "negotiax": "`negotiax:frozen`"}
    assert set(example) == set(_BUILTIN)                   # a new built-in family needs its row
    for family, mode in example.items():
        assert mode in text, family
    assert "### NegotiaX" in text and "W<sub>o</sub> and b<sub>o</sub> start at 0" in text
