"""The Personalize tab: its pure helpers (``app.personal``) and its ``/personalize`` endpoint on the
tiny app (no trained personal adapters there, so ICA / PBA are the prompted modes; the shipped
direction probe was fitted on another model, so it is not used unless a test supplies one)."""
from __future__ import annotations

import pytest

from app import personal as P
from test_app_support import tiny_app, tiny_experts  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def dims(data_dir):
    from alignx.personal.prompts import load_dims

    return load_dims(data_dir)


# --- pure helpers ---------------------------------------------------------------------------------
def test_typed_history_becomes_a_user():
    rows = [["Tell me a joke.", "A pun!", "No."], ["", None, float("nan")], ["Plan a trip", " Rome ", "Stay home"]]
    user = P.user_from_history(rows, "I love puns.\n\nAnd long trips.\n  \n")
    assert [(p.prompt, p.chosen, p.rejected) for p in user.history] == [
        ("Tell me a joke.", "A pun!", "No."), ("Plan a trip", "Rome", "Stay home")]
    assert user.comments == ("I love puns.", "And long trips.")
    assert user.direction is None
    assert P.history_table(user)[1] == ["Plan a trip", "Rome", "Stay home"]


@pytest.mark.parametrize("rows, message", [
    ([["a", "b", "c"], ["prompt only", "", ""]], r"row 2: fill in preferred and not preferred"),
    ([["", "", ""], ["", "yes", "no"]], r"row 2: fill in prompt"),
    ([["a", "same", "same"]], r"row 1: the preferred and not preferred answers are the same"),
    ([["", "", ""]] * 4, r"empty"),
    (None, r"empty"),
    ([["a", "b", "c"]] * 5, r"at most 4"),
])
def test_bad_typed_history_names_the_row(rows, message):
    with pytest.raises(P.InputError, match=message):
        P.user_from_history(rows)


def test_groups_cover_every_dimension_exactly_once(dims):
    groups = P.dimension_groups(dims)
    indices = [int(d["index"]) for _, ds in groups for d in ds]
    assert sorted(indices) == list(range(90)) and len(indices) == len(set(indices)) == 90
    assert all(1 <= len(ds) <= 25 for _, ds in groups)
    names = dict(groups)
    assert {d["positive"] for d in names["What an answer should be"]} >= {
        "Concerned about harmlessness", "Concerned about honesty", "Concerned about helpfulness"}
    assert P.pole_choices(names["Demographics & personality"])[:4] == ["Young", "Older", "Female", "Male"]


def test_chosen_poles_make_a_direction(dims):
    direction = P.direction_from_poles(["Older", "Concerned about honesty", "Indifferent about harmlessness"], dims)
    assert len(direction) == 90
    assert (direction[0], direction[42], direction[40]) == (0.0, 1.0, 0.0)
    assert sum(v == 0.5 for v in direction) == 87
    assert P.direction_from_poles([], dims) == (0.5,) * 90
    with pytest.raises(P.InputError, match="both poles"):
        P.direction_from_poles(["Young", "Older"], dims)
    with pytest.raises(P.InputError, match="unknown preference pole"):
        P.direction_from_poles(["Likes broccoli"], dims)


def test_sources_and_persona_labels():
    assert P.normalize_source("typed history") == P.TYPED and P.normalize_source("psoups") == P.PSOUPS
    with pytest.raises(P.InputError, match="unknown source"):
        P.normalize_source("telepathy")
    friendly = ["Generate a response that is friendly, witty, funny, and humorous, like a close friend.",
                "Generate a response in an unfriendly manner."]
    assert list(P.persona_labels("friendly_unfriendly", friendly).values()) == ["friendly", "unfriendly"]
    phd = ["Generate a response that can be easily understood by an elementary school student.",
           "Generate a response that only a PhD Student in that specific field could understand."]
    assert list(P.persona_labels("student_phd", phd).values()) == ["student", "phd"]


def test_eval_users_are_capped_and_balanced(data_dir):
    from collections import Counter

    from alignx.personal.data import load_psoups

    splits = load_psoups(data_dir)
    users = P.eval_users(splits, per_file=10)
    assert len(users) == 10 * len(splits)
    eval_rows = {(name, ex.row) for name, (_, held) in splits.items() for ex in held}
    for key, (label, ex) in users.items():
        assert key == f"{ex.source}#{ex.row}" and (ex.source, ex.row) in eval_rows
        assert label.startswith(f"{ex.source} #{ex.row} · ") and len(ex.user.history) == 4
    by_file = Counter((ex.source, label.split(" · ")[1]) for label, ex in users.values())
    assert set(by_file.values()) == {5}                   # 5 per persona per file
    assert {tag for _, tag in by_file} == {"friendly", "unfriendly", "student", "phd"}


# --- the endpoint on the tiny app -------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(tiny_app):
    from gradio_client import Client

    return Client(tiny_app[0], verbose=False)


def test_endpoint_is_listed(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    params = [p["parameter_name"] for p in api["/personalize"]["parameters"]]
    assert params == ["prompt", "source", "psoups_user", "history", "comments", "poles", "max_new_tokens",
                      "temperature"]


def test_profile_of_a_psoups_user_steers_the_routing_and_three_columns_answer(client, tiny_app):
    out = client.predict("How do I stay safe online?", "P-Soups user", "friendly_unfriendly#4", None, "", None, 6,
                         api_name="/personalize")
    assert out["user"].startswith("friendly_unfriendly #4 · ")
    assert out["profile_text"].startswith("This user's preference profile: ")
    experts = tiny_app[1].studio.mocae.experts
    assert set(out["preferences"]) == set(experts)
    assert all(0.05 <= v <= 1 for v in out["preferences"].values())
    assert set(out["routing"]["default"]) == set(out["routing"]["user"]) == set(experts)
    assert sum(out["routing"]["user"].values()) == pytest.approx(1.0, abs=1e-4)
    assert out["modes"] == {"base": "base", "ICA": "prompt-ica", "PBA": "prompt-pba"}
    assert set(out["answers"]) == {"base", "ICA", "PBA"}
    assert all(isinstance(a, str) for a in out["answers"].values())
    assert "earlier preferences" in out["user_text"]["ICA"] and "preference profile" in out["user_text"]["PBA"]
    # the shipped probe is for another model: said plainly, nothing inferred
    assert out["inferred_profile"] is None
    assert any("not inferred" in n for n in out["notes"])


def test_chosen_poles_set_the_preferences(client):
    out = client.predict("Is the moon made of cheese?", "Preference dimensions", "", None, "",
                         ["Concerned about honesty", "Concerned about truthfulness", "Indifferent about harmlessness"],
                         2, api_name="/personalize")
    prefs = out["preferences"]
    assert prefs["honest"] == pytest.approx(1.0) and prefs["harmless"] == pytest.approx(0.25)
    assert prefs["helpful"] == pytest.approx(0.5)
    assert out["routing"]["user"]["honest"] > out["routing"]["default"]["honest"]
    assert "Concerned about honesty" in out["user_text"]["PBA"]


def test_bad_typed_history_is_an_error_and_the_server_keeps_serving(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="row 2: fill in not preferred"):
        client.predict("Hi", "Typed history", "", [["a", "b", "c"], ["d", "e", ""]], "", None, 2,
                       api_name="/personalize")
    with pytest.raises(AppError, match="unknown P-Soups user"):
        client.predict("Hi", "P-Soups user", "nobody#1", api_name="/personalize")
    with pytest.raises(AppError, match="both poles"):
        client.predict("Hi", "Preference dimensions", "", None, "", ["Young", "Older"], api_name="/personalize")
    out = client.predict("Hi", "Typed history", "", [["Tell a joke", "A pun", "No"]], "I like puns.", None, 2,
                         api_name="/personalize")
    assert set(out["answers"]) == {"base", "ICA", "PBA"}
    assert "I like puns." in out["user_text"]["ICA"]
    assert out["profile_text"] is None          # a typed history states no profile


def test_a_probe_for_the_served_model_infers_the_preferences(client, tiny_app, tmp_path, monkeypatch):
    import torch

    from alignx.personal.infer import DirectionProbe

    studio = tiny_app[1].studio
    monkeypatch.setitem(studio.extras, "personal_dir", str(tmp_path))
    typed = ("Plan a weekend", "Typed history", "", [["Tell a joke", "A pun", "No"]], "", None, 2)
    out = client.predict(*typed, api_name="/personalize")          # no probe at all: said so
    assert out["inferred_profile"] is None and any("no direction probe" in n for n in out["notes"])
    width = studio.model.config.hidden_size
    gen = torch.Generator().manual_seed(0)
    DirectionProbe().fit(torch.randn(6, width, generator=gen), torch.rand(6, 90, generator=gen),
                         l2=1.0).save(tmp_path / "probe")
    out = client.predict(*typed, api_name="/personalize")
    assert out["inferred_profile"].startswith("This user's preference profile") or \
        out["inferred_profile"].startswith("This user has no stated preferences")
    assert set(out["preferences"]) == set(studio.mocae.experts)
    assert not any("not inferred" in n for n in out["notes"])
