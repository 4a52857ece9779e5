"""3D molecules: QM9 and user SDF/XYZ data, an E(n)-equivariant backbone, EDM metrics."""
