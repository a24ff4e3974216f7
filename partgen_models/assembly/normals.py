"""Smooth vertex normals for export: angle-weighted, split along creases.

A vertex gets one normal per smoothing group: the corners of the faces around it whose normals lie
within ``crease_angle`` of each other share a normal (the faces' normals weighted by their angle at
that vertex, Thürmer & Wüthrich 1998), and a vertex on a crease is duplicated once per side, so a
box keeps sharp edges while a reconstructed blob shades smoothly.

The original vertices keep their indices (``source[:N] == arange(N)``) and the copies made along
creases follow, so a reader that welds identical positions and colours gets the original mesh back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Vertices with more incident corners than this (fans, e.g. the pole of a cone) are smoothed over all
# their faces without crease splits: comparing every pair of corners grows with the degree squared.
MAX_CREASE_DEGREE = 64
_FALLBACK_NORMAL = np.array([0.0, 1.0, 0.0])  # for vertices that touch no face with any area


@dataclass(frozen=True)
class SplitNormals:
    """source ``[K]``: original vertex of each output vertex (K >= N); normals ``[K,3]`` unit float32;
    faces ``[M,3]`` indexing the output vertices."""

    source: np.ndarray
    normals: np.ndarray
    faces: np.ndarray


def face_normals_and_corner_angles(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit face normals ``[M,3]`` (zero for zero-area faces) and each corner's angle ``[M,3]`` in radians."""
    corners = vertices[faces]  # (M, 3 corners, 3 xyz)
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    length = np.linalg.norm(cross, axis=1, keepdims=True)
    normals = np.divide(cross, length, out=np.zeros_like(cross), where=length > 1e-20)
    angles = np.zeros(faces.shape, dtype=np.float64)
    for k in range(3):
        a = corners[:, (k + 1) % 3] - corners[:, k]
        b = corners[:, (k + 2) % 3] - corners[:, k]
        angles[:, k] = np.arctan2(np.linalg.norm(np.cross(a, b), axis=1), (a * b).sum(1))
    return normals, angles


def _normalise(vectors: np.ndarray) -> np.ndarray:
    length = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, length, out=np.zeros_like(vectors), where=length > 1e-20)


def split_normals(vertices: np.ndarray, faces: np.ndarray, crease_angle_deg: float = 60.0) -> SplitNormals:
    """See the module docstring. ``crease_angle_deg`` 0 gives flat shading, 180 smooths everything."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    n = vertices.shape[0]
    face_normal, angle = face_normals_and_corner_angles(vertices, faces)
    corner_vertex = faces.reshape(-1)  # (3M,)
    corner_face = np.repeat(np.arange(faces.shape[0]), 3)
    weighted = face_normal[corner_face] * angle.reshape(-1, 1)  # (3M, 3)

    # Every vertex's normal over all its faces: the answer for fans and for zero-area faces.
    vertex_sum = np.zeros((n, 3))
    np.add.at(vertex_sum, corner_vertex, weighted)
    vertex_normal = _normalise(vertex_sum)
    corner_normal = vertex_normal[corner_vertex].copy()

    # Corners grouped by vertex; pair each corner with every corner of its vertex (degree² pairs).
    order = np.argsort(corner_vertex, kind="stable")
    degree = np.bincount(corner_vertex, minlength=n)
    start = np.concatenate([[0], np.cumsum(degree)[:-1]])
    limited = order[degree[corner_vertex[order]] <= MAX_CREASE_DEGREE]
    cos_crease = np.cos(np.radians(np.clip(crease_angle_deg, 0.0, 180.0)))
    if limited.size:
        partner_counts = degree[corner_vertex[limited]]
        first = np.repeat(limited, partner_counts)
        offsets = np.arange(first.size) - np.repeat(np.cumsum(partner_counts) - partner_counts, partner_counts)
        second = order[start[corner_vertex[first]] + offsets]
        same_side = (face_normal[corner_face[first]] * face_normal[corner_face[second]]).sum(1) >= cos_crease - 1e-9
        same_side |= first == second
        sums = np.zeros((faces.size, 3))
        np.add.at(sums, first[same_side], weighted[second[same_side]])
        grouped = _normalise(sums[limited])
        has_area = np.linalg.norm(grouped, axis=1) > 0
        corner_normal[limited[has_area]] = grouped[has_area]
    missing = np.linalg.norm(corner_normal, axis=1) == 0
    corner_normal[missing] = _FALLBACK_NORMAL

    # One output vertex per (vertex, normal); the first group of each vertex keeps its index.
    quantised = np.round(corner_normal * 1e5).astype(np.int64)
    keys = np.concatenate([corner_vertex[:, None], quantised], axis=1)
    unique_keys, first_corner, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    key_vertex = unique_keys[:, 0]
    is_first = np.ones(len(unique_keys), dtype=bool)
    is_first[1:] = key_vertex[1:] != key_vertex[:-1]
    output_index = np.where(is_first, key_vertex, n + np.cumsum(~is_first) - 1)
    extra = int((~is_first).sum())
    source = np.concatenate([np.arange(n), key_vertex[~is_first]])
    normals = np.tile(_FALLBACK_NORMAL, (n + extra, 1))
    normals[output_index] = corner_normal[first_corner]
    return SplitNormals(source=source, normals=normals.astype(np.float32),
                        faces=output_index[inverse.reshape(-1)].reshape(-1, 3))
