"""The bad-input corpus (``tests/bad_inputs.py``) through the CLI and the served app.

CLI: ``alignx.cli.main(argv)`` in this process; the exit status is 2 and the error is one line
(``error: ...``, or argparse's ``... error: ...``) matching the case, with no traceback.
App: the tiny studio (random experts, a synthetic router), served once for the module on
127.0.0.1; each case is called with gradio_client (or raw HTTP for what gradio_client cannot
send), must fail with a message matching the case, and the server must answer a good
``/generate`` right after. The last tests check that every endpoint still works.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest

import tiny_studio
from bad_inputs import ADAPTERS, CASES, FILES, T, File
from test_app_support import free_port

CLI_CASES = [c for c in CASES if c.cli is not None]
APP_CASES = [c for c in CASES if c.api is not None or c.raw is not None]


# --- the world: files, adapters, the served app --------------------------------------------------
def make_bad_adapter(kind: str, good: Path, folder: Path) -> Path:
    """An adapter folder that must be refused: a copy of ``good`` broken one way (``kind``)."""
    import torch
    from safetensors.torch import save_file

    if kind == "othershape":          # a LoRA of a tiny Llama with hidden size 32, its card claiming tiny-random
        from peft import LoraConfig, get_peft_model
        from transformers import LlamaForCausalLM

        from alignx.tiny import tiny_config

        torch.manual_seed(0)
        model = get_peft_model(LlamaForCausalLM(tiny_config(512, hidden_size=32)),
                               LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
        model.save_pretrained(folder)
        (folder / "card.json").write_text(json.dumps({"axis": "helpful", "base_model": "tiny-random"}))
        return folder
    shutil.copytree(good, folder)
    weights = folder / "adapter_model.safetensors"
    if kind == "trunc":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif kind == "otherbase":
        card = json.loads((folder / "card.json").read_text())
        (folder / "card.json").write_text(json.dumps(dict(card, base_model="HuggingFaceTB/SmolLM2-135M-Instruct")))
    elif kind == "badcard":
        (folder / "card.json").write_text("{nope")
    elif kind == "badcfg":
        (folder / "adapter_config.json").write_text("[]")
    elif kind == "binonly":
        weights.rename(folder / "adapter_model.bin")
    elif kind == "noweights":
        save_file({}, str(weights))
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from alignx.arena import VoteStore
    from alignx.studio import Studio
    from app.context import AppContext
    from app.ui import build_demo, launch

    root = tmp_path_factory.mktemp("bad-inputs")
    paths = {"root": str(root)}
    for name, content in FILES.items():
        path = root / name
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        paths[name] = str(path)
    (root / "folder.json").mkdir()
    experts = tiny_studio.build(root / "experts")
    shutil.copytree(experts, root / "clean")                 # what @T loads: the experts and the router
    good = experts / "helpful"
    for kind in ADAPTERS:
        (root / f"cli_{kind}").mkdir()
        paths[f"cli_{kind}"] = str(make_bad_adapter(kind, good, root / f"cli_{kind}" / "helpful").parent)
    studio = Studio.load("tiny-random", experts, device="cpu")
    for kind in ADAPTERS:                                     # offered by the Experts tab from here on
        make_bad_adapter(kind, good, experts / kind)
    shutil.copytree(good, root / "outside" / "good")
    os.symlink(root / "outside" / "good", experts / "escape")
    make_bad_adapter("trunc", good, root / "runs" / "trunc2")
    ctx = AppContext(studio, VoteStore(root / "votes.sqlite"), runs_dir=root / "runs")
    demo = build_demo(ctx)
    _, url, _ = launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                       quiet=True)
    yield SimpleNamespace(root=root, paths=paths, url=url.rstrip("/"), ctx=ctx, studio=studio)
    demo.close()


@pytest.fixture(scope="module")
def client(world):
    from gradio_client import Client

    return Client(world.url, verbose=False)


def fill(text: str, paths: dict) -> str:
    for key, value in paths.items():
        text = text.replace("{" + key + "}", value)
    return text


# --- CLI -------------------------------------------------------------------------------------------
def run_cli(argv: list[str]) -> tuple[int, str]:
    from alignx.cli import main

    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as exc:            # argparse's own errors
            rc = exc.code
    return rc, err.getvalue()


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli(case, world):
    argv = []
    for a in case.cli:
        argv += ["--model", "tiny-random", "--experts-dir", str(world.root / "clean")] if a == T else [fill(a, world.paths)]
    rc, err = run_cli(argv)
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if re.match(r"(error: |python -m alignx.*: error: )", line)]
    assert rc == 2 and len(errors) == 1, f"exit {rc}, stderr:\n{err[-3000:]}"
    assert re.search(case.expect, errors[0]), errors[0]


# --- app -------------------------------------------------------------------------------------------
def raw_call(world, api: str, body: str) -> str:
    """The message of a failed raw call: the HTTP error body, or the data of the ``error`` event."""
    import httpx

    if api == "upload":                                     # a file over the app's 20 MB upload limit
        r = httpx.post(f"{world.url}/gradio_api/upload", files={"files": ("big.json", b" " * (21 * 1024 * 1024))},
                       timeout=120)
        assert r.status_code == 413, (r.status_code, r.text[:300])
        return r.text
    r = httpx.post(f"{world.url}/gradio_api/call/{api}", content=fill(body, world.paths).encode("utf-8", "surrogatepass"),
                   headers={"Content-Type": "application/json"}, timeout=60)
    if r.status_code != 200:
        assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])    # a client error, never a 500
        return r.text
    with httpx.stream("GET", f"{world.url}/gradio_api/call/{api}/{r.json()['event_id']}", timeout=120) as s:
        events = "".join(s.iter_text())
    found = re.search(r"event: error\ndata: (.*)\n", events)
    assert found, f"no error event: {events[-500:]}"
    message = json.loads(found[1])
    assert isinstance(message, dict) and message.get("error"), f"an error without a message: {events[-500:]}"
    return message["error"]


def api_call(world, client, api: tuple) -> str:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    endpoint, *values = api
    values = [handle_file(world.paths[v.name]) if isinstance(v, File) else v for v in values]
    with pytest.raises(AppError) as info:
        client.predict(*values, api_name=endpoint)
    return str(info.value)


def still_serving(client) -> None:
    answer, weights = client.predict("hi", "base", 2, 0.0, 1.0, api_name="/generate")
    assert isinstance(answer, str) and isinstance(weights, str)


@pytest.mark.parametrize("case", APP_CASES, ids=[c.id for c in APP_CASES])
def test_app(case, world, client):
    from gradio_client import Client

    caller = Client(world.url, verbose=False) if case.fresh else client
    message = (api_call(world, caller, case.api) if case.api is not None else raw_call(world, *case.raw))
    assert re.search(case.api_expect or case.expect, message), message
    assert "Traceback" not in message
    still_serving(client)


# --- the table and the server after it -------------------------------------------------------------
def test_the_corpus_is_big_and_every_case_runs_somewhere():
    ids = [c.id for c in CASES]
    assert len(CASES) >= 60 and len(set(ids)) == len(ids)
    assert all(c.cli is not None or c.api is not None or c.raw is not None for c in CASES)
    assert sum(c.cli is not None and (c.api is not None or c.raw is not None) for c in CASES) >= 60
    for c in CASES:
        re.compile(c.expect)


def test_every_endpoint_is_in_the_corpus(client):
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    covered = {c.api[0] for c in APP_CASES if c.api} | {"/" + c.raw[0] for c in APP_CASES if c.raw}
    assert named <= covered, f"endpoints without a bad-input case: {sorted(named - covered)}"


def test_every_endpoint_still_works_after_the_corpus(world, client):
    still_serving(client)
    assert set(client.predict("Is the Earth flat?", 3, api_name="/compare")) >= {"base", "expert:helpful"}
    route = client.predict("Is the Earth flat?", api_name="/route")
    assert abs(sum(route["probabilities"].values()) - 1) < 1e-5
    assert client.predict(0.5, 0.5, 1.0, api_name="/recalibrate")["prompt"] == "Is the Earth flat?"
    assert client.predict(api_name="/leaderboard")["votes"] == 0          # no bad vote was stored
    assert len(world.ctx.studio.experts) == 3 and world.studio.modes()[:4] == [
        "base", "expert:harmless", "expert:helpful", "expert:honest"]            # no bad adapter half-loaded
    assert not set(world.studio.model.peft_config) & {*ADAPTERS, "escape", "trunc2", "runs/trunc2"}
