"""The core never imports a domain library."""

import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("torchaudio", "torch_geometric", "rdkit", "trimesh", "domains")


def test_core_imports_no_domain_library():
    code = (
        "import sys\n"
        "import diffplat, diffplat.cli, diffplat.cli.train, diffplat.training.module\n"
        "import diffplat.training.checkpoint, diffplat.samplers, diffplat.guidance\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
        "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"core imported: {out.stdout.strip()}"
