"""Assembly: placing parts, exporting them (one GLB scene with a node per part, per-part files)."""
