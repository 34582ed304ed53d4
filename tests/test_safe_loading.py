"""No unsafe deserialisation or remote code anywhere in the project's code (an AST scan):
``torch.load`` only with ``weights_only=True``; no ``pickle`` / ``dill`` / ``joblib`` /
``cloudpickle`` loads, no ``numpy.load(allow_pickle=True)``, no ``trust_remote_code=True`` and no
``use_safetensors=False``; the app caps upload sizes."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCANNED = [p for d in ("alignx", "app", "bench", "tests") for p in sorted((REPO / d).rglob("*.py"))] + [REPO / "app.py"]
UNSAFE_MODULES = {"pickle", "dill", "joblib", "cloudpickle", "marshal", "shelve"}


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(source: str, filename: str = "<string>") -> list[str]:
    """Lines of ``source`` with an unsafe load, as 'file:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for n in names:
                if n.split(".")[0] in UNSAFE_MODULES:
                    found.append(f"{filename}:{node.lineno}: imports {n}")
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        if name == "load" and owner == "torch" and not _true(_kw(node, "weights_only")):
            found.append(f"{filename}:{node.lineno}: torch.load without weights_only=True")
        if name == "load" and owner in ("np", "numpy") and _true(_kw(node, "allow_pickle")):
            found.append(f"{filename}:{node.lineno}: numpy.load(allow_pickle=True)")
        if _true(_kw(node, "trust_remote_code")):
            found.append(f"{filename}:{node.lineno}: trust_remote_code=True")
        v = _kw(node, "use_safetensors")
        if isinstance(v, ast.Constant) and v.value is False:
            found.append(f"{filename}:{node.lineno}: use_safetensors=False")
    return found


def test_the_scan_catches_each_unsafe_form():
    bad = ("import pickle\nimport torch\ntorch.load('x')\ntorch.load('x', weights_only=False)\n"
           "np.load('a', allow_pickle=True)\nAutoModel.from_pretrained('m', trust_remote_code=True)\n"
           "AutoModel.from_pretrained('m', use_safetensors=False)\nfrom joblib import load\n")
    assert len(unsafe_calls(bad)) == 7
    assert unsafe_calls("import torch\ntorch.load('x', weights_only=True)\n") == []


def test_no_unsafe_load_in_the_code():
    problems = [p for path in SCANNED if path.name != "test_safe_loading.py"
                for p in unsafe_calls(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]
    assert not problems, "\n".join(problems)


def test_uploads_are_capped():
    import inspect

    from app import ui

    assert "max_file_size" in inspect.signature(__import__("gradio").Blocks.launch).parameters
    assert ui.MAX_UPLOAD and "max_file_size" in inspect.getsource(ui.launch)


def test_models_load_without_remote_code():
    import inspect

    from alignx import models

    assert inspect.signature(models.load_model).parameters["trust_remote_code"].default is False
