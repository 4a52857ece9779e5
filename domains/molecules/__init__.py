"""3D molecules: QM9 and user SDF/XYZ data, an E(n)-equivariant backbone, EDM metrics.

``PLUGIN`` is this domain's declaration to diffplat (entry point ``diffplat.domains``)."""

from diffplat.plugins import DomainPlugin

PLUGIN = DomainPlugin(
    name="molecules",
    domain="domains.molecules.domain:MoleculeDomain",
    summary="3D molecules (QM9, your SDF/XYZ) with an E(n)-equivariant GNN; EDM's metrics",
    aliases=("qm9",),
    prepare_help="qm9: the QM9 cache with EDM's split, from the offline qm9pack wheel",
    evaluators={"property": "domains.molecules.property_cli:main"},
    backbones=("domains.molecules.egnn:EGNNBackbone",),
)
