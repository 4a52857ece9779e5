"""Graph-conditioned conformer generation (docs/conformers.md).

``PLUGIN`` is this domain's declaration to diffplat (entry point ``diffplat.domains``): it
adds the ``diffplat conformers`` command and ``diffplat evaluate conformers``."""

from diffplat.plugins import DomainPlugin

PLUGIN = DomainPlugin(
    name="conformers",
    domain="domains.molecules.conformers.domain:ConformerDomain",
    summary="conformers of given molecular graphs (SMILES/SDF); COV/MAT beside RDKit ETKDG",
    commands={"conformers": "domains.molecules.conformers.cli:conformers_main"},
    evaluators={"conformers": "domains.molecules.conformers.evaluate:evaluate_main"},
    command_help={"conformers": "(--ckpt CKPT | --baseline rdkit) ...  conformers of given "
                                "molecules"},
    extra="molecules",
    backbones=("domains.molecules.conformers.backbone:ConformerEGNN",),
)
