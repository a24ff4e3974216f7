"""Reconstruction: views (of a whole object or of P parts) → coloured meshes (InstantMesh LRM)."""
