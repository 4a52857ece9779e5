"""3D shapes: point clouds sampled from meshes, a point transformer, the PointFlow metrics.

``PLUGIN`` is this domain's declaration to diffplat (entry point ``diffplat.domains``)."""

from diffplat.plugins import DomainPlugin, lazy_exports

PLUGIN = DomainPlugin(
    name="shapes",
    domain="domains.shapes.domain:ShapeDomain",
    summary="point clouds from mesh folders (OBJ/OFF/PLY/STL); PointFlow's CD/EMD metrics",
    mask_help="shapes: view:+x (keep what a camera on +x sees; also -x, +y, ...) or "
              "first (keep the points of the file as given)",
    prepare_help="shapes: procedural meshes of six classes (per_class each)",
    backbones=("domains.shapes.backbone:PointTransformer",),
)

_EXPORTS = {"ShapeDomain": "domains.shapes.domain", "Clouds": "domains.shapes.domain",
            "PointTransformer": "domains.shapes.backbone"}

__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = ["PLUGIN", *_EXPORTS]
