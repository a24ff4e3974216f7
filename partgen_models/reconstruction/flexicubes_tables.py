"""Dual Marching Cubes lookup tables for FlexiCubes, generated here from the algorithm.

Nothing in this module is transcribed from upstream's ``tables.py``: the three tables FlexiCubes needs
for triangle-mesh extraction are built at first use (a few milliseconds) from the rules below, and
``tests/test_flexicubes.py`` checks that they equal the tables upstream ships (stored, as upstream's
output, in ``tests/data/flexicubes_golden.safetensors``). Upstream's fourth table, ``tet_table``, is only
used for tetrahedral output, which InstantMesh never asks for, so it is not built.

Conventions (the same as InstantMesh's ``src/models/geometry/rep_3d/flexicubes.py``, which follows the
FlexiCubes reference code; changing any of them changes the order of the output vertices and faces):

* Corner ``c`` of a cube sits at offset ``(c & 1, (c >> 1) & 1, (c >> 2) & 1)`` (x, y, z): bit ``c`` of a
  case id is set when the SDF at that corner is negative (inside).
* The 12 edges are numbered as in the classic Lorensen-Cline / Bourke marching-cubes tables, written in
  the corner labels above. Edges along y are listed from their y=1 corner to their y=0 corner; this
  orientation decides how surface edges are sorted, hence the face order and the quad winding.

Rules (FlexiCubes, Shen et al. 2023, Sec. 4.1 and supplementary Sec. 1.3):

* ``dmc_table``: one dual vertex per connected patch of the marching-cubes surface inside the cube.
  Two sign-changing edges of a cube face belong to the same patch when they bound the same corner
  region of that face; on an ambiguous face (two diagonal corners inside, two outside) the two inside
  corners are kept apart, i.e. each inside corner's two edges are paired. Patches are ordered by the
  corners of the minority sign they enclose (inside corners when at most 4 corners are inside,
  outside corners otherwise), compared as sorted tuples; edges within a patch are ascending.
* ``num_vd_table``: the number of patches (dual vertices) of each case.
* ``check_table``: cases (DMC C16/C19) with exactly one ambiguous face whose four sign-changing edges
  all belong to a single patch. Two such cubes that face each other produce a non-manifold dual
  vertex, so FlexiCubes then uses the complementary case (``255 - case``, same edges, opposite pairing
  on the ambiguous face) for both. Row layout: ``[flag, dx, dy, dz, replacement_case]`` with
  ``(dx, dy, dz)`` the outward normal of the ambiguous face, i.e. the offset of the neighbour to test.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

NUM_CASES = 256
MAX_DUAL_VERTICES = 4  # no case has more than 4 patches
MAX_EDGES_PER_VERTEX = 7  # a patch touches at most 7 of the 12 edges

CUBE_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 5), (4, 5), (0, 4),  # y = 0 face loop
    (2, 3), (3, 7), (6, 7), (2, 6),  # y = 1 face loop
    (2, 0), (3, 1), (7, 5), (6, 4),  # along y, from the y=1 corner to the y=0 corner
)


def corner_offset(corner: int) -> tuple[int, int, int]:
    """(x, y, z) offset of a cube corner: bit 0 is x, bit 1 is y, bit 2 is z."""
    return corner & 1, (corner >> 1) & 1, (corner >> 2) & 1


@dataclass(frozen=True)
class CubeFace:
    axis: int  # 0, 1, 2 for x, y, z
    side: int  # 0: the face at offset 0 along axis, 1: at offset 1
    corners: tuple[int, ...]  # 4 corners
    edges: tuple[int, ...]  # 4 edge ids


@functools.cache
def cube_faces() -> tuple[CubeFace, ...]:
    faces = []
    for axis in range(3):
        for side in (0, 1):
            corners = tuple(c for c in range(8) if corner_offset(c)[axis] == side)
            edges = tuple(e for e, (a, b) in enumerate(CUBE_EDGES) if a in corners and b in corners)
            faces.append(CubeFace(axis, side, corners, edges))
    return tuple(faces)


def _inside(case: int, corner: int) -> bool:
    return bool((case >> corner) & 1)


def _crossing_edges(case: int) -> list[int]:
    return [e for e, (a, b) in enumerate(CUBE_EDGES) if _inside(case, a) != _inside(case, b)]


def _is_ambiguous(case: int, face: CubeFace) -> bool:
    """A face whose four edges all change sign: two diagonal corners inside, two outside."""
    return all(_inside(case, a) != _inside(case, b) for a, b in (CUBE_EDGES[e] for e in face.edges))


def _patches(case: int) -> list[list[int]]:
    """Connected patches of sign-changing edges, linked across faces (Sec. 4.1; DMC)."""
    parent = {e: e for e in _crossing_edges(case)}

    def root(e: int) -> int:
        while parent[e] != e:
            e = parent[e]
        return e

    def link(e0: int, e1: int) -> None:
        parent[root(e0)] = root(e1)

    for face in cube_faces():
        crossing = [e for e in face.edges if e in parent]
        if len(crossing) == 2:
            link(*crossing)
        elif len(crossing) == 4:
            # Ambiguous face: pair the two edges around each inside corner, so inside corners that
            # meet only diagonally stay apart (the same choice on both sides of the face).
            for corner in face.corners:
                if _inside(case, corner):
                    link(*[e for e in crossing if corner in CUBE_EDGES[e]])
    groups: dict[int, list[int]] = {}
    for e in parent:
        groups.setdefault(root(e), []).append(e)
    patches = [sorted(g) for g in groups.values()]
    minority_inside = bin(case).count("1") <= 4

    def enclosed_corners(patch: list[int]) -> tuple[int, ...]:
        return tuple(sorted({c for e in patch for c in CUBE_EDGES[e] if _inside(case, c) == minority_inside}))

    return sorted(patches, key=enclosed_corners)


def _ambiguity_check(case: int, patches: list[list[int]]) -> list[int]:
    """``[flag, dx, dy, dz, replacement]`` for C16/C19 cases (supplementary Sec. 1.3), else zeros."""
    ambiguous = [f for f in cube_faces() if _is_ambiguous(case, f)]
    if len(ambiguous) != 1:
        return [0, 0, 0, 0, 0]
    face = ambiguous[0]
    if not any(set(face.edges) <= set(p) for p in patches):
        return [0, 0, 0, 0, 0]
    offset = [0, 0, 0]
    offset[face.axis] = 1 if face.side == 1 else -1
    return [1, *offset, NUM_CASES - 1 - case]


@dataclass(frozen=True)
class DualMarchingCubesTables:
    dmc: torch.Tensor  # (256, 4, 7) long: edge ids of each dual vertex's patch, -1 padded
    num_vd: torch.Tensor  # (256,) long: dual vertices per case
    check: torch.Tensor  # (256, 5) long: [flag, dx, dy, dz, replacement case]
    cube_edges: torch.Tensor  # (12, 2) long: corner pairs of the edges


@functools.cache
def _cpu_tables() -> DualMarchingCubesTables:
    dmc = torch.full((NUM_CASES, MAX_DUAL_VERTICES, MAX_EDGES_PER_VERTEX), -1, dtype=torch.long)
    num_vd = torch.zeros(NUM_CASES, dtype=torch.long)
    check = torch.zeros((NUM_CASES, 5), dtype=torch.long)
    for case in range(NUM_CASES):
        patches = _patches(case)
        num_vd[case] = len(patches)
        for v, patch in enumerate(patches):
            dmc[case, v, : len(patch)] = torch.tensor(patch)
        check[case] = torch.tensor(_ambiguity_check(case, patches))
    return DualMarchingCubesTables(dmc, num_vd, check, torch.tensor(CUBE_EDGES, dtype=torch.long))


@functools.lru_cache(maxsize=8)
def dual_marching_cubes_tables(device: torch.device | None = None) -> DualMarchingCubesTables:
    """The tables on ``device`` (CPU by default); built once, then cached per device."""
    tables = _cpu_tables()
    if device is None or torch.device(device).type == "cpu":
        return tables
    fields = (tables.dmc, tables.num_vd, tables.check, tables.cube_edges)
    return DualMarchingCubesTables(*(t.to(device) for t in fields))
