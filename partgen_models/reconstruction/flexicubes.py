"""FlexiCubes mesh extraction (Shen et al. 2023, "Flexible Isosurface Extraction for Gradient-Based Mesh
Optimization"), as InstantMesh runs it at inference, in plain torch.

Our own implementation of the algorithm; it reproduces the output of InstantMesh's copy of the
reference code (``src/models/geometry/rep_3d/flexicubes.py`` called from ``flexicubes_geometry.py`` with
``weight_scale=0.5``, ``training=False``, triangle output): the same vertices (to float rounding) in the
same order, and the same faces in the same order. The lookup tables are generated from the algorithm
in ``flexicubes_tables.py``, not transcribed.

Unlike upstream, only the cubes the surface crosses are ever processed: no ``(R^3, 21)`` weights, no
per-cube ``(R^3, 8)`` occupancy or ``(R^3, 5)`` ambiguity volume, and no ``torch.unique`` over all
``12 R^3`` grid edges (upstream: ~8 GB of CPU memory at R=128). The grid itself (:func:`make_grid`) is
built arithmetically and is meant to be built once and reused.

Usage (what InstantMesh's ``get_geometry_prediction`` does, restricted to the surface)::

    grid = make_grid(128, 2.1)                         # once per (resolution, scale, device)
    sdf, offsets = ...                                 # the SDF / deformation heads at grid.vertices
    vertices = grid.vertices + torch.tanh(offsets) / (128 * 4.0)
    cube_ids = surface_cubes(grid, sdf)                # (S,)
    weights = ...                                      # the weight head for grid.cubes[cube_ids], (S, 21)
    mesh_vertices, mesh_faces = extract_mesh(grid, sdf, vertices, cube_ids, weights)

At large resolutions, query the SDF head alone over ``grid.positions`` in chunks, and deform only the
surface cubes' corners: ``extract_mesh(grid, sdf, corner_vertices, cube_ids, weights, vertex_ids=corner_ids)``
(what ``reconstruction.reconstruct`` does; memory ``(R+1)^3 * ~8`` bytes plus ~1 KB per surface cube).

Output order: vertices are the dual vertices, grouped by how many dual vertices their cube has (cubes
with 1 first, then 2, 3, 4), ascending cube id within a group, patch order within a cube. Like upstream,
dual vertices of cubes whose crossing edges all lie on the grid's outer boundary are returned although
no face uses them (none exist when the surface stays strictly inside the grid). Faces come two per
quad; quads are listed first for the crossing edges whose first vertex is outside (``sdf > 0``), then
for the others, each in ascending order of the grid edge; faces are wound counter-clockwise seen from
the positive (outside) side.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch

from .flexicubes_tables import DualMarchingCubesTables, corner_offset, dual_marching_cubes_tables

logger = logging.getLogger(__name__)

WEIGHT_SCALE = 0.5  # InstantMesh's FlexiCubesGeometry builds FlexiCubes(weight_scale=0.5)
NUM_WEIGHTS = 21  # beta (12 edges) | alpha (8 corners) | gamma (1 per cube), as the weight head emits them
# InstantMesh's construct_voxel_grid snaps grid positions to 1e-5 before merging cube corners; we keep
# that rounding so that our grid (and everything downstream of it) is bitwise upstream's.
_GRID_ROUNDING = 10**5
# Quad corners are listed around the grid edge in the order of the 4 cubes' ids (a 2x2 block); these
# reorderings make a cycle and set the winding (upstream ``_triangulate``).
_QUAD_CYCLE_FIRST_OUTSIDE = [0, 1, 3, 2]
_QUAD_CYCLE_FIRST_INSIDE = [2, 3, 1, 0]
# The two ways of splitting quad (0, 1, 2, 3) into triangles: along the 0-2 or the 1-3 diagonal.
_SPLIT_02 = [0, 1, 2, 0, 2, 3]
_SPLIT_13 = [0, 1, 3, 3, 1, 2]


@dataclass(frozen=True, eq=False)
class FlexiCubesGrid:
    """A regular grid of ``resolution^3`` cubes spanning ``[-scale/2, scale/2]^3``.

    Built once per (resolution, scale, device) by :func:`make_grid` and reused. Only the ``(R+1,)`` axis
    positions are stored: :meth:`positions` computes any vertices' positions from their ids, so memory
    does not grow with ``R^3`` (R=512: the full tables would hold 1.6 GB of vertices and 8.6 GB of cube
    corners). ``vertices`` and ``cubes`` build the full tables on first use (tests, small grids); layouts
    equal upstream's ``FlexiCubesGeometry.verts`` / ``.indices``:

    * vertex ``(ix, iy, iz)`` has id ``(ix * (R+1) + iy) * (R+1) + iz`` and position
      ``(round(i / R, 5 decimals) - 0.5) * scale`` per axis, in float32;
    * cube ``(i, j, k)`` (its lowest corner is vertex ``(i, j, k)``) has id ``(i * R + j) * R + k``;
      its corner ``c`` is vertex ``(i + (c & 1), j + (c >> 1 & 1), k + (c >> 2 & 1))``.
    """

    resolution: int
    scale: float
    axis: torch.Tensor  # (R+1,) float32 positions along each axis

    @property
    def num_vertices(self) -> int:
        return (self.resolution + 1) ** 3

    @property
    def num_cubes(self) -> int:
        return self.resolution**3

    @property
    def device(self) -> torch.device:
        return self.axis.device

    def positions(self, vertex_ids: torch.Tensor) -> torch.Tensor:
        """``(K, 3)`` float32 positions of the vertices ``vertex_ids`` (bitwise rows of ``vertices``)."""
        n = self.resolution + 1
        ids = vertex_ids.to(self.device).long()
        return torch.stack([self.axis[ids // (n * n)], self.axis[(ids // n) % n], self.axis[ids % n]], dim=1)

    @functools.cached_property
    def vertices(self) -> torch.Tensor:
        """``((R+1)^3, 3)`` float32 positions of all vertices, x-major (``(R+1)^3 * 12`` bytes)."""
        n = self.resolution + 1
        return torch.stack(torch.meshgrid(self.axis, self.axis, self.axis, indexing="ij"), dim=-1).reshape(n**3, 3)

    @functools.cached_property
    def cubes(self) -> torch.Tensor:
        """``(R^3, 8)`` long corner vertex ids of all cubes (``R^3 * 64`` bytes)."""
        n, r, device = self.resolution + 1, self.resolution, self.device
        # Corner 0 of cube (i, j, k) is vertex (i, j, k): build its id by broadcasting, without R^3-sized
        # index temporaries.
        steps = torch.arange(r, device=device)
        base = (steps[:, None, None] * n + steps[None, :, None]) * n + steps[None, None, :]  # (R, R, R)
        return base.reshape(-1, 1) + _corner_vertex_offsets(r, device)[None, :]


def make_grid(resolution: int, scale: float, device: torch.device | str | None = None) -> FlexiCubesGrid:
    """The FlexiCubes grid of InstantMesh (``grid_res``, ``grid_scale`` 2.1 in its configs) on ``device``.

    Costs ``(R+1) * 4`` bytes; the full vertex and cube tables are built only if read (``(R+1)^3 * 12``
    plus ``R^3 * 64`` bytes: R=128 25 MB + 134 MB, R=512 1.6 GB + 8.6 GB).
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    scale = float(scale)
    if not (scale > 0 and scale < float("inf")):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    device = torch.device("cpu") if device is None else torch.device(device)
    axis = _axis_positions(resolution).to(device) * scale  # (R+1,)
    return FlexiCubesGrid(resolution=resolution, scale=scale, axis=axis)


def surface_cubes(grid: FlexiCubesGrid, sdf: torch.Tensor) -> torch.Tensor:
    """Ids (ascending, ``(S,)`` long) of the cubes whose corners are not all of one sign.

    "Inside" means ``sdf < 0`` (upstream ``_identify_surf_cubes``): zeros count as outside. Only these
    cubes' weights are read by :func:`extract_mesh`. Works on the ``(R+1)^3`` volume with 2x2x2 window
    reductions: a few ``R^3`` boolean temporaries, never ``(R^3, 8)``.
    """
    sdf = _flat_field(grid, sdf)
    n, r = grid.resolution + 1, grid.resolution
    inside = (sdf < 0).reshape(n, n, n)
    any_inside = torch.zeros((r, r, r), dtype=torch.bool, device=sdf.device)
    all_inside = torch.ones((r, r, r), dtype=torch.bool, device=sdf.device)
    for corner in range(8):
        dx, dy, dz = corner_offset(corner)
        window = inside[dx : dx + r, dy : dy + r, dz : dz + r]
        any_inside |= window
        all_inside &= window
    return torch.nonzero((any_inside & ~all_inside).reshape(-1)).squeeze(1)


def cube_corner_ids(grid: FlexiCubesGrid, cube_ids: torch.Tensor) -> torch.Tensor:
    """``grid.cubes[cube_ids]`` computed from the ids, without reading the ``(R^3, 8)`` table."""
    offsets = _corner_vertex_offsets(grid.resolution, cube_ids.device)
    return _cube_base_vertex(cube_ids, grid.resolution)[:, None] + offsets[None, :]  # (S, 8)


def extract_mesh(
    grid: FlexiCubesGrid,
    sdf: torch.Tensor,
    vertices: torch.Tensor,
    cube_ids: torch.Tensor,
    weights: torch.Tensor,
    vertex_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangle mesh of the zero level set, as upstream ``FlexiCubes(..., training=False)`` returns it.

    Args:
        grid: from :func:`make_grid`.
        sdf: ``((R+1)^3,)`` (or ``((R+1)^3, 1)``) signed distances at the grid vertices, negative inside.
        vertices: ``((R+1)^3, 3)`` deformed grid vertex positions, or with ``vertex_ids`` only those
            vertices' positions, row ``i`` for vertex ``vertex_ids[i]``.
        cube_ids: ``(S,)`` exactly ``surface_cubes(grid, sdf)`` (a subset leaves holes).
        weights: ``(S, 21)`` raw weight-head outputs for those cubes (what InstantMesh passes as
            ``weight_n``, i.e. after its ``* 0.1``): beta for the 12 edges, alpha for the 8 corners,
            gamma. Normalised here with ``weight_scale = 0.5``.
        vertex_ids: optional strictly increasing ids of the vertices given in ``vertices``; they must
            include every corner of the listed cubes (the only vertices read). Lets a caller deform
            only the surface cubes' corners instead of all ``(R+1)^3`` vertices; same output.

    Returns:
        ``(vertices (N, 3) float32, faces (M, 3) long)``, in upstream's order (module docstring).
        No surface (all positive, all negative): ``(0, 3)`` and ``(0, 3)``.
    """
    sdf, vertices, cube_ids, weights = _check_inputs(grid, sdf, vertices, cube_ids, weights, vertex_ids)
    device = vertices.device
    if cube_ids.numel() == 0:
        return torch.zeros((0, 3), device=device), torch.zeros((0, 3), dtype=torch.long, device=device)
    tables = dual_marching_cubes_tables(device)
    corners = cube_corner_ids(grid, cube_ids)  # (S, 8)
    inside = sdf[corners] < 0  # (S, 8)
    if inside.all(dim=1).any() or not inside.any(dim=1).all():
        raise ValueError("cube_ids must be surface_cubes(grid, sdf): some listed cubes do not cross the surface")
    corner_rows = corners if vertex_ids is None else _rows_of(vertex_ids.to(device).long(), corners)
    beta, alpha, gamma = _normalize_weights(weights)
    cases = _case_ids(grid, cube_ids, inside, tables)
    edge_of_slot, edge_first_vertex, edge_cube_count = _crossing_edges(grid, corners, inside, tables)
    dual_vertices, vertex_gamma, vertex_of_slot = _dual_vertices(
        vertices, sdf, corners, corner_rows, cases, edge_of_slot, beta, alpha, gamma, tables
    )
    faces = _triangulate(sdf, edge_of_slot, edge_first_vertex, edge_cube_count, vertex_of_slot, vertex_gamma)
    logger.debug("FlexiCubes R=%d: %d surface cubes -> %d vertices, %d faces",
                 grid.resolution, cube_ids.numel(), dual_vertices.shape[0], faces.shape[0])
    return dual_vertices, faces


# ----------------------------------------------------------------------------------------------------
# Grid layout


def _axis_positions(resolution: int) -> torch.Tensor:
    """``(R+1,)`` float32 grid positions along one axis, before ``scale``: bitwise upstream's.

    Upstream places cube corners at ``i / R + c / R`` (float32), rounds them to 5 decimals to merge the
    corners that cubes share, and subtracts 0.5 (``construct_voxel_grid``). A vertex is reached both as
    corner 0 of cube ``n`` and as corner 1 of cube ``n - 1``; for most resolutions (all powers of two,
    all up to 106) both round to the same value. For the others (107, 111, 159, ...) upstream's merge
    fails, its grid gets duplicate vertices and InstantMesh cannot reshape its SDF; we then keep the
    cube-origin value, a grid one rounding step (1e-5) from upstream's.
    """
    r = torch.tensor(float(resolution))
    steps = torch.arange(resolution, dtype=torch.float32) / r  # cube origins i / R
    as_corner0 = torch.cat([steps, steps[-1:] + 1.0 / r])  # vertex n from cube n (n = R: from cube R-1)
    as_corner1 = torch.cat([steps[:1], steps + 1.0 / r])  # vertex n from cube n-1 (n = 0: from cube 0)
    rounded0 = torch.round(as_corner0 * _GRID_ROUNDING) / _GRID_ROUNDING
    rounded1 = torch.round(as_corner1 * _GRID_ROUNDING) / _GRID_ROUNDING
    if not torch.equal(rounded0, rounded1):
        logger.debug("resolution %d: upstream's grid would not merge its cube corners; using cube origins", resolution)
    return rounded0 - 0.5


def _cube_base_vertex(cube_ids: torch.Tensor, resolution: int) -> torch.Tensor:
    """Vertex id of each cube's corner 0, i.e. of grid point (i, j, k)."""
    r, n = resolution, resolution + 1
    i, j, k = cube_ids // (r * r), (cube_ids // r) % r, cube_ids % r
    return (i * n + j) * n + k


@functools.lru_cache(maxsize=16)
def _corner_vertex_offsets(resolution: int, device: torch.device) -> torch.Tensor:
    """``(8,)`` vertex-id offsets of the 8 corners from corner 0."""
    n = resolution + 1
    return torch.tensor([(x * n + y) * n + z for x, y, z in map(corner_offset, range(8))], device=device)


def _cube_coordinates(cube_ids: torch.Tensor, resolution: int) -> torch.Tensor:
    r = resolution
    return torch.stack([cube_ids // (r * r), (cube_ids // r) % r, cube_ids % r], dim=1)  # (S, 3)


# ----------------------------------------------------------------------------------------------------
# Input checks


def _flat_field(grid: FlexiCubesGrid, sdf: torch.Tensor) -> torch.Tensor:
    if sdf.dim() == 2 and sdf.shape[1] == 1:
        sdf = sdf[:, 0]
    if sdf.shape != (grid.num_vertices,):
        raise ValueError(
            f"sdf must have shape ({grid.num_vertices},) for a grid of resolution {grid.resolution}, "
            f"got {tuple(sdf.shape)}"
        )
    return sdf


def _rows_of(vertex_ids: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """Row of each corner id in the sorted ``vertex_ids``; refuses corners that are not listed."""
    rows = torch.searchsorted(vertex_ids, corners).clamp(max=vertex_ids.numel() - 1)
    if not torch.equal(vertex_ids[rows], corners):
        raise ValueError("vertex_ids must include every corner of the listed cubes")
    return rows


def _check_inputs(
    grid: FlexiCubesGrid, sdf: torch.Tensor, vertices: torch.Tensor, cube_ids: torch.Tensor, weights: torch.Tensor,
    vertex_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    sdf = _flat_field(grid, sdf)
    rows = grid.num_vertices if vertex_ids is None else vertex_ids.shape[0]
    if vertices.shape != (rows, 3):
        raise ValueError(f"vertices must have shape ({rows}, 3), got {tuple(vertices.shape)}")
    if vertex_ids is not None and vertex_ids.numel() and (
        vertex_ids.dim() != 1 or (vertex_ids[1:] <= vertex_ids[:-1]).any()
    ):
        raise ValueError("vertex_ids must be a 1-D strictly increasing tensor of vertex ids")
    integer = not (cube_ids.dtype == torch.bool or cube_ids.is_floating_point() or cube_ids.is_complex())
    if cube_ids.dim() != 1 or not integer:
        raise ValueError(
            f"cube_ids must be a 1-D integer tensor from surface_cubes, got {cube_ids.dtype} {tuple(cube_ids.shape)}"
        )
    if weights.shape != (cube_ids.shape[0], NUM_WEIGHTS):
        raise ValueError(
            f"weights must have shape ({cube_ids.shape[0]}, {NUM_WEIGHTS}) (one row per cube id), "
            f"got {tuple(weights.shape)}"
        )
    cube_ids = cube_ids.long()
    if cube_ids.numel() > 0:
        # Output order follows cube order, and the ambiguity check looks neighbours up by binary search.
        if (cube_ids[1:] <= cube_ids[:-1]).any() or cube_ids[0] < 0 or cube_ids[-1] >= grid.num_cubes:
            raise ValueError("cube_ids must be strictly increasing cube ids in [0, R^3), as surface_cubes returns them")
    device = vertices.device
    return sdf.to(device, torch.float32), vertices.float(), cube_ids.to(device), weights.to(device, torch.float32)


# ----------------------------------------------------------------------------------------------------
# The algorithm


def _normalize_weights(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Map raw weights to positive ranges (upstream ``_normalize_weights``): beta, alpha in
    ``1 ± WEIGHT_SCALE`` (they weight edge crossings and corners, Sec. 4.2), gamma in
    ``0.5 ± WEIGHT_SCALE / 2`` (quad split preference, Sec. 4.3)."""
    beta = torch.tanh(weights[:, :12]) * WEIGHT_SCALE + 1  # (S, 12)
    alpha = torch.tanh(weights[:, 12:20]) * WEIGHT_SCALE + 1  # (S, 8)
    gamma = torch.sigmoid(weights[:, 20]) * WEIGHT_SCALE + (1 - WEIGHT_SCALE) / 2  # (S,)
    return beta, alpha, gamma


def _case_ids(
    grid: FlexiCubesGrid, cube_ids: torch.Tensor, inside: torch.Tensor, tables: DualMarchingCubesTables
) -> torch.Tensor:
    """Marching-cubes case of each cube, with the C16/C19 fix (supplementary Sec. 1.3).

    A cube of such a case whose neighbour across the ambiguous face is also of such a case (any of
    them, as upstream tests it) switches to the complementary case; the neighbour's own test uses its
    original case. Neighbours are found by binary search among the surface cubes instead of upstream's
    dense ``(R^3, 5)`` volume.
    """
    bits = torch.arange(8, device=inside.device)
    cases = (inside.long() << bits).sum(dim=1)  # (S,)
    check = tables.check[cases]  # (S, 5)
    flagged = check[:, 0] == 1
    if not flagged.any():
        return cases
    flagged_ids = cube_ids[flagged]  # ascending, since cube_ids are
    neighbour = _cube_coordinates(flagged_ids, grid.resolution) + check[flagged, 1:4]  # (P, 3)
    in_grid = ((neighbour >= 0) & (neighbour < grid.resolution)).all(dim=1)
    r = grid.resolution
    neighbour_ids = (neighbour[:, 0] * r + neighbour[:, 1]) * r + neighbour[:, 2]
    position = torch.searchsorted(flagged_ids, neighbour_ids).clamp(max=flagged_ids.numel() - 1)
    invert = in_grid & (flagged_ids[position] == neighbour_ids)
    rows = torch.nonzero(flagged).squeeze(1)[invert]
    cases = cases.clone()
    cases[rows] = check[rows, 4]
    return cases


def _crossing_edges(
    grid: FlexiCubesGrid, corners: torch.Tensor, inside: torch.Tensor, tables: DualMarchingCubesTables
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Number the grid edges the surface crosses, in upstream's order.

    Returns ``edge_of_slot`` ``(S, 12)`` (edge number of each cube edge, -1 where the signs agree),
    ``first_vertex`` ``(E,)`` (the edge's first vertex in ``CUBE_EDGES`` orientation) and ``cube_count``
    ``(E,)`` (how many listed cubes share the edge: 4 unless it lies on the grid's outer faces).
    Edges are numbered in lexicographic order of their (first, second) vertex ids, as upstream's
    ``torch.unique(dim=0)`` over vertex pairs numbers them; this fixes the face order.
    """
    first = corners[:, tables.cube_edges[:, 0]]  # (S, 12)
    second = corners[:, tables.cube_edges[:, 1]]
    crossing = inside[:, tables.cube_edges[:, 0]] != inside[:, tables.cube_edges[:, 1]]
    key = first[crossing] * grid.num_vertices + second[crossing]  # lexicographic (first, second)
    unique_keys, edge_number, cube_count = torch.unique(key, sorted=True, return_inverse=True, return_counts=True)
    edge_of_slot = torch.full_like(first, -1)
    edge_of_slot[crossing] = edge_number
    return edge_of_slot, unique_keys // grid.num_vertices, cube_count


def _dual_vertices(
    vertices: torch.Tensor,
    sdf: torch.Tensor,
    corners: torch.Tensor,
    corner_rows: torch.Tensor,
    cases: torch.Tensor,
    edge_of_slot: torch.Tensor,
    beta: torch.Tensor,
    alpha: torch.Tensor,
    gamma: torch.Tensor,
    tables: DualMarchingCubesTables,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dual vertex positions (Sec. 4.2): per patch, the beta-weighted mean of its edges' crossings,
    each crossing interpolated with alpha-scaled SDF values at the edge's two corners.

    Returns ``(positions (V, 3), gamma (V,), vertex_of_slot (S, 12))``; ``vertex_of_slot`` is -1 on
    edges the surface does not cross. Vertex order: cubes sorted (stably) by their number of dual
    vertices, the order in which upstream batches them, then patch order.
    """
    per_cube = tables.num_vd[cases]  # (S,)
    cube_order = torch.argsort(per_cube, stable=True)
    counts = per_cube[cube_order]
    vertex_cube = cube_order.repeat_interleave(counts)  # (V,) cube row of each dual vertex
    starts = torch.cumsum(counts, 0) - counts
    vertex_patch = torch.arange(vertex_cube.numel(), device=cases.device) - starts.repeat_interleave(counts)
    patch_edges = tables.dmc[cases[vertex_cube], vertex_patch]  # (V, 7), -1 padded
    vertex, slot = torch.nonzero(patch_edges >= 0, as_tuple=True)  # (K,) each: one entry per (vertex, edge)
    cube = vertex_cube[vertex]
    edge = patch_edges[vertex, slot]
    corner_a, corner_b = tables.cube_edges[edge, 0], tables.cube_edges[edge, 1]
    id_a, id_b = corners[cube, corner_a], corners[cube, corner_b]
    row_a, row_b = corner_rows[cube, corner_a], corner_rows[cube, corner_b]  # rows of ``vertices``
    # Crossing of the alpha-weighted linear interpolant: x = (x_a w_b - x_b w_a) / (w_b - w_a), w = alpha s.
    w_a = (sdf[id_a] * alpha[cube, corner_a])[:, None]
    w_b = (sdf[id_b] * alpha[cube, corner_b])[:, None]
    crossing = (vertices[row_a] * w_b - vertices[row_b] * w_a) / (w_b - w_a)  # (K, 3)
    edge_beta = beta[cube, edge][:, None]  # (K, 1)
    num_vertices = vertex_cube.numel()
    beta_sum = vertices.new_zeros((num_vertices, 1)).index_add_(0, vertex, edge_beta)
    positions = vertices.new_zeros((num_vertices, 3)).index_add_(0, vertex, crossing * edge_beta) / beta_sum
    vertex_of_slot = torch.full_like(edge_of_slot, -1)
    vertex_of_slot[cube, edge] = vertex
    return positions, gamma[vertex_cube], vertex_of_slot


def _triangulate(
    sdf: torch.Tensor,
    edge_of_slot: torch.Tensor,
    edge_first_vertex: torch.Tensor,
    edge_cube_count: torch.Tensor,
    vertex_of_slot: torch.Tensor,
    vertex_gamma: torch.Tensor,
) -> torch.Tensor:
    """One quad per crossed interior grid edge, joining the dual vertices of its 4 cubes, split into two
    triangles along the diagonal whose gamma product is larger (Sec. 4.3)."""
    slots = edge_of_slot.reshape(-1)
    # Only crossed edges inside the grid have 4 cubes around them; those on its outer faces get no quad.
    interior = (slots >= 0) & (edge_cube_count[slots.clamp(min=0)] == 4)
    edges = slots[interior]
    quad_edges, order = torch.sort(edges, stable=True)  # 4 slots per edge, in cube-id order
    quads = vertex_of_slot.reshape(-1)[interior][order].reshape(-1, 4)  # (Q, 4)
    # Wind every quad to face the positive side: upstream lists the quads whose edge starts outside
    # (sdf > 0; a zero counts as not outside here, unlike in the inside test) first.
    first_outside = sdf[edge_first_vertex[quad_edges[0::4]]] > 0
    quads = torch.cat([
        quads[first_outside][:, _QUAD_CYCLE_FIRST_OUTSIDE],
        quads[~first_outside][:, _QUAD_CYCLE_FIRST_INSIDE],
    ])
    quad_gamma = vertex_gamma[quads]  # (Q, 4)
    split_02 = quad_gamma[:, 0] * quad_gamma[:, 2] > quad_gamma[:, 1] * quad_gamma[:, 3]
    faces = torch.where(split_02[:, None], quads[:, _SPLIT_02], quads[:, _SPLIT_13])  # (Q, 6)
    return faces.reshape(-1, 3)
