"""The core never imports a domain library."""

import ast
import re
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("torchaudio", "torch_geometric", "rdkit", "trimesh", "domains")


def test_core_imports_no_domain_library():
    code = (
        "import sys\n"
        "import diffplat, diffplat.cli, diffplat.training.lightning, diffplat.training.module\n"
        "import diffplat.training.checkpoint, diffplat.samplers, diffplat.guidance\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
        "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"core imported: {out.stdout.strip()}"


def _strings(tree: ast.AST) -> list[str]:
    """Every string constant of a module that is not a docstring."""
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docs]


def test_core_names_no_domain_module_by_import_or_by_string():
    """Domains plug in through entry points (diffplat/plugins.py): the core neither imports
    `domains` nor names its modules in strings (class paths, import_module arguments)."""
    root = Path(__file__).resolve().parents[1] / "diffplat"
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [f"{path}: import {a.name}" for a in node.names
                          if a.name.split(".")[0] == "domains"]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == \
                    "domains":
                found.append(f"{path}: from {node.module} import ...")
        for text in _strings(tree):
            if re.search(r"\bdomains\.[a-z_]+", text):
                found.append(f"{path}: string {text[:60]!r}")
    assert not found, "\n".join(found)


def _imports(path: Path) -> list[str]:
    """The modules a file imports (``import a.b`` and ``from a.b import c`` both give a.b),
    function-local imports included."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_no_import_circle_between_cli_compare_and_training():
    """cli/ sits on top: it may import compare/ and training/; compare/ may import training/
    but not cli/; training/ imports neither (its library entry point is training.fit)."""
    root = Path(__file__).resolve().parents[1] / "diffplat"
    forbidden = {"training": ("diffplat.cli", "diffplat.compare"),
                 "compare": ("diffplat.cli",)}
    found = []
    for package, banned in forbidden.items():
        for path in sorted((root / package).rglob("*.py")):
            found += [f"{path.relative_to(root)}: {n}" for n in _imports(path)
                      if n.startswith(banned)]
    assert not found, "\n".join(found)


def test_help_of_the_non_training_commands_loads_no_lightning():
    """`diffplat sample --help` and the other non-training helps start fast: they import
    neither Lightning nor jsonargparse (and `diffplat --help` not even torch)."""
    code = (
        "import sys, contextlib, io\n"
        "from diffplat.cli import main\n"
        "cmds = [['sample'], ['evaluate'], ['export'], ['data'], ['compare'],\n"
        "        ['tune-steps'], ['conformers']]\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules)\n"
        "for cmd in cmds:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main([*cmd, '--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(sorted(m for m in ('pytorch_lightning', 'lightning_fabric', 'jsonargparse')\n"
        "            if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert out.returncode == 0, out.stderr
    torch_for_top_help, heavy = out.stdout.strip().splitlines()[-2:]
    assert torch_for_top_help == "False"
    assert heavy == "[]"


def test_only_training_and_the_commands_that_train_import_training_or_lightning():
    """The model, the store, sampling and the Python API sit below training: only
    training/, the fit/validate/test dispatch of cli/__init__.py, compare/'s worker (it
    trains the grid's cells) and progress.py's Lightning progress bar import
    ``diffplat.training`` or Lightning (tests/test_no_lightning.py checks the running
    process)."""
    root = Path(__file__).resolve().parents[1] / "diffplat"
    allowed = {"cli/__init__.py", "compare/worker.py", "progress.py"}
    lightning = ("pytorch_lightning", "lightning", "lightning_fabric")
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root))
        if rel.startswith("training/") or rel in allowed:
            continue
        found += [f"{rel}: {n}" for n in _imports(path) if n.split(".")[0] in lightning
                  or n == "diffplat.training" or n.startswith("diffplat.training.")]
    assert not found, "\n".join(found)
