"""No unsafe deserialisation or remote code anywhere in the project's code (an AST scan of every
``.py`` file of the repository, tests included):

- ``torch.load`` / ``torch.serialization.load`` only with ``weights_only=True``; no ``torch.jit.load``;
- no ``pickle`` / ``_pickle`` / ``dill`` / ``joblib`` / ``cloudpickle`` / ``marshal`` / ``shelve``
  import (``import``, ``from ... import``, ``__import__`` or ``importlib.import_module``);
- no ``numpy.load(allow_pickle=...)`` other than ``False``; no ``read_pickle`` (pandas);
- ``yaml.load`` / ``load_all`` only with a ``SafeLoader``, no ``yaml.unsafe_load``;
- ``trust_remote_code`` only ``False``, or a parameter passed through by a function whose own
  default is ``False``; no ``use_safetensors=False``.

Aliases are resolved: ``import torch as T; T.load(p)`` and ``from torch import load as L; L(p)``
are ``torch.load``. The app caps upload sizes; models load without remote code.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".venv", ".git", "node_modules", "test-artifacts", "__pycache__", "build", "dist"}
SCANNED = sorted(p for p in REPO.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(REPO).parts))
UNSAFE_MODULES = {"pickle", "_pickle", "pickle5", "dill", "joblib", "cloudpickle", "marshal", "shelve"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


class _Scan(ast.NodeVisitor):
    def __init__(self, filename: str):
        self.filename, self.found = filename, []
        self.aliases: dict[str, str] = {}          # local name -> dotted name it stands for
        self.functions: list[ast.AST] = []          # enclosing function definitions

    def flag(self, node: ast.AST, what: str) -> None:
        self.found.append(f"{self.filename}:{node.lineno}: {what}")

    # --- names ------------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name.split(".")[0] in UNSAFE_MODULES:
                self.flag(node, f"imports {a.name}")
            self.aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module.split(".")[0] in UNSAFE_MODULES:
            self.flag(node, f"imports {module}")
        for a in node.names:
            self.aliases[a.asname or a.name] = f"{module}.{a.name}" if module else a.name
        self.generic_visit(node)

    def dotted(self, node) -> str:
        """``T.serialization.load`` -> ``torch.serialization.load`` (via the import aliases)."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return ".".join(reversed(parts))
        return ".".join([self.aliases.get(node.id, node.id), *reversed(parts)])

    # --- functions (for trust_remote_code pass-through) ------------------------------------------
    def visit_FunctionDef(self, node) -> None:
        self.functions.append(node)
        self.generic_visit(node)
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def _param_defaults_false(self, name: str) -> bool:
        if not self.functions:
            return False
        args = self.functions[-1].args
        pos = args.posonlyargs + args.args
        defaults = dict(zip([a.arg for a in pos][len(pos) - len(args.defaults):], args.defaults))
        defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None})
        return name in defaults and _const(defaults[name], False)

    # --- calls -------------------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        if name in ("torch.load", "torch.serialization.load") and not _const(_kw(node, "weights_only"), True):
            self.flag(node, f"{name} without weights_only=True")
        if name == "torch.jit.load":
            self.flag(node, "torch.jit.load (TorchScript archives run code)")
        if name == "numpy.load":
            v = _kw(node, "allow_pickle")
            if v is not None and not _const(v, False):
                self.flag(node, "numpy.load(allow_pickle=...)")
        if last == "read_pickle":
            self.flag(node, f"{name} (pickle)")
        if name in ("yaml.unsafe_load", "yaml.unsafe_load_all"):
            self.flag(node, name)
        if name in ("yaml.load", "yaml.load_all"):
            loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or self.dotted(loader).rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                self.flag(node, f"{name} without a SafeLoader")
        if name in ("__import__", "importlib.import_module") and node.args and isinstance(node.args[0], ast.Constant) \
                and str(node.args[0].value).split(".")[0] in UNSAFE_MODULES:
            self.flag(node, f"imports {node.args[0].value}")
        v = _kw(node, "trust_remote_code")
        if v is not None and not _const(v, False) and not (isinstance(v, ast.Name) and self._param_defaults_false(v.id)):
            self.flag(node, "trust_remote_code not False")
        if _const(_kw(node, "use_safetensors"), False):
            self.flag(node, "use_safetensors=False")
        self.generic_visit(node)


def unsafe_calls(source: str, filename: str = "<string>") -> list[str]:
    """Lines of ``source`` with an unsafe load, as 'file:line: what'."""
    scan = _Scan(filename)
    scan.visit(ast.parse(source))
    return scan.found


UNSAFE = {
    "import pickle": 1,
    "import _pickle as cPickle": 1,
    "from joblib import load": 1,
    "__import__('dill')": 1,
    "import importlib\nimportlib.import_module('cloudpickle')": 1,
    "import torch\ntorch.load('x')": 1,
    "import torch\ntorch.load('x', weights_only=False)": 1,
    "import torch as T\nT.load('x')": 1,
    "from torch import load\nload('x')": 1,
    "from torch import load as fetch\nfetch('x', map_location='cpu')": 1,
    "import torch\ntorch.serialization.load('x')": 1,
    "from torch import serialization as s\ns.load('x')": 1,
    "import torch\nkw = {}\ntorch.load('x', **kw)": 1,
    "import torch\ntorch.jit.load('m.pt')": 1,
    "import numpy as np\nnp.load('a', allow_pickle=True)": 1,
    "import numpy as xp\nflag = True\nxp.load('a', allow_pickle=flag)": 1,
    "import pandas as pd\npd.read_pickle('f')": 1,
    "from pandas import read_pickle\nread_pickle('f')": 1,
    "import yaml\nyaml.load(open('c'))": 1,
    "import yaml\nyaml.load(open('c'), Loader=yaml.Loader)": 1,
    "import yaml\nyaml.unsafe_load('a: 1')": 1,
    "AutoModel.from_pretrained('m', trust_remote_code=True)": 1,
    "flag = True\nAutoModel.from_pretrained('m', trust_remote_code=flag)": 1,
    "def f(trust_remote_code=True):\n    AutoModel.from_pretrained('m', trust_remote_code=trust_remote_code)": 1,
    "AutoModel.from_pretrained('m', use_safetensors=False)": 1,
}
SAFE = [
    "import torch\ntorch.load('x', weights_only=True)",
    "import torch as T\nT.load('x', map_location='cpu', weights_only=True)",
    "import numpy as np\nnp.load('a')\nnp.load('b', allow_pickle=False)",
    "import yaml\nyaml.safe_load('a: 1')\nyaml.load('a: 1', Loader=yaml.SafeLoader)",
    "import json\njson.load(open('f'))",
    "from safetensors.torch import load_file\nload_file('a.safetensors')",
    "AutoModel.from_pretrained('m', trust_remote_code=False, use_safetensors=True)",
    "def f(x, trust_remote_code: bool = False):\n    AutoModel.from_pretrained(x, trust_remote_code=trust_remote_code)",
    "def f(x, *, trust_remote_code=False):\n    AutoModel.from_pretrained(x, trust_remote_code=trust_remote_code)",
]


def test_the_scan_catches_each_unsafe_form():
    for source, n in UNSAFE.items():
        assert len(unsafe_calls(source)) == n, (source, unsafe_calls(source))
    for source in SAFE:
        assert unsafe_calls(source) == [], (source, unsafe_calls(source))


def test_no_unsafe_load_in_the_code():
    assert len(SCANNED) > 100 and REPO / "app.py" in SCANNED
    problems = [p for path in SCANNED if path.name != "test_safe_loading.py"
                for p in unsafe_calls(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]
    assert not problems, "\n".join(problems)


def test_uploads_are_capped():
    import inspect

    from app import ui

    assert "max_file_size" in inspect.signature(__import__("gradio").Blocks.launch).parameters
    assert ui.MAX_UPLOAD == "20mb" and "max_file_size" in inspect.getsource(ui.launch)


def test_models_load_without_remote_code():
    import inspect

    from alignx import models

    assert inspect.signature(models.load_model).parameters["trust_remote_code"].default is False
