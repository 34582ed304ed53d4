"""The MAC analysis on the tiny model with a trained tiny circuit: every view's shapes and
invariants, the circuit's hooks removed afterwards, the cache keyed by the circuit file, figures,
and clear errors for a non-NegotiaX mode or an empty prompt."""
from __future__ import annotations

import pytest
import torch

from alignx.errors import InvalidInput
from alignx.interp import mac as M
from alignx.interp import mac_figures as MF

OBJ = ("harmless", "helpful", "honest")
DATA = {o: [(f"Question {i} about {o}?", f"An answer about {o}, number {i}.") for i in range(4)] for o in OBJ}


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from alignx.negotiax import preset
    from alignx.negotiax.core import NegotiaX
    from alignx.negotiax.train import train_mac, train_preset
    from alignx.studio import Studio

    st = Studio.load("tiny-random", None, device="cpu")
    folder = tmp_path_factory.mktemp("nx")
    st.extras["negotiax_dir"] = folder
    nx = NegotiaX.fresh(st.model, st.tokenizer, OBJ, preset("tiny"))
    train_mac(nx, DATA, nx.cfg, train_preset("tiny", steps=2), folder, name="full", base_model=st.lm.name)
    return st


def test_views(studio, tmp_path, data_dir):
    kw = dict(cache_dir=tmp_path)
    neg = M.negotiation(studio, "negotiax", "Tell me about the sea.", 6, **kw)
    w = torch.tensor(neg["weights"])
    assert w.shape == (len(neg["tokens"]), neg["heads"], 3) and torch.allclose(w.sum(-1), torch.ones(w.shape[:2]))
    assert 0 < neg["response_start"] <= len(neg["tokens"])
    spec = M.specialisation(studio, "negotiax", 2, data_dir=data_dir, **kw)
    assert set(spec["categories"]) == set(OBJ)
    for m in spec["categories"].values():
        assert torch.allclose(torch.tensor(m).sum(-1), torch.ones(len(m)), atol=1e-5)
    iv = M.interventions(studio, "negotiax", "Tell me about the sea.", 5, **kw)
    assert set(iv["answers"]) == {"full", "circuit off", *(f"without {o}" for o in OBJ)}
    base = studio.policy("base").answer("Tell me about the sea.", __import__("alignx").Sampling(max_new_tokens=5))
    assert iv["answers"]["circuit off"] == base                                # off is the base exactly
    tr = M.trajectories(studio, "negotiax", ["Tell me about the sea.", "How do I hurt someone?"], **kw)
    layers = len(tr["points"]["with_mac"][0])
    assert layers == studio.model.config.num_hidden_layers + 1 and len(tr["points"]["without_mac"]) == 2
    assert tr["relative_shift"][0][0] == 0.0 and tr["relative_shift"][0][-1] > 0   # the embeddings are untouched
    geo = M.geometry(studio, "negotiax", 1, data_dir=data_dir, **kw)
    ov = torch.tensor(geo["subspace_overlap"])
    assert torch.allclose(ov.diag(), torch.ones(3)) and bool((ov <= 1 + 1e-5).all())
    assert torch.allclose(torch.tensor(geo["direction_cosine"]).diag(), torch.ones(3), atol=1e-5)
    from alignx import hooks

    assert not hooks.installed(studio.model)
    again = M.negotiation(studio, "negotiax", "Tell me about the sea.", 6, **kw)
    assert again["cache"]["hit"] and again["weights"] == neg["weights"]
    from alignx.negotiax.family import available, load

    with torch.no_grad():                                      # other circuit weights: computed afresh
        load(studio, available(studio)["negotiax"]).circuit.W_o.mul_(2.0)
    assert not M.negotiation(studio, "negotiax", "Tell me about the sea.", 6, **kw)["cache"]["hit"]
    for fig in (MF.negotiation_figure(neg), MF.specialisation_figure(spec), MF.trajectories_figure(tr),
                MF.geometry_figure(geo)):
        assert fig.to_json()
    assert "without helpful" in MF.interventions_html(iv)


def test_errors(studio):
    with pytest.raises(InvalidInput, match="needs a NegotiaX mode, not 'base'; available: negotiax"):
        M.negotiation(studio, "base", "hi")
    with pytest.raises(InvalidInput, match="non-empty prompt"):
        M.interventions(studio, "negotiax", "  ")
    with pytest.raises(InvalidInput, match="at least one prompt"):
        M.trajectories(studio, "negotiax", [])
