"""3D shapes: point clouds sampled from meshes, a point transformer, the PointFlow metrics."""

from domains.shapes.backbone import PointTransformer
from domains.shapes.domain import Clouds, ShapeDomain

__all__ = ["ShapeDomain", "PointTransformer", "Clouds"]
