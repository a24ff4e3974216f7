"""A procedural evaluation set: seeded part-structured objects with named, coloured parts.

Eleven kinds (tables, chairs, lamps, snowmen, cars, trucks, mugs, rockets, trees, bookshelves, robots),
2–10 parts each, built from simple primitives with seeded proportions and options, in the glTF
object frame (Y up, front +Z, about a metre across). Every part has one flat colour, drawn without
replacement from a palette of well-separated colours, so neighbouring parts never share one.

The shipped evaluation set is regenerated on the fly: ``evaluation_set(count=EVAL_SET_SIZE,
seed=EVAL_SET_SEED)`` (22 objects, 127 parts, seed 0). Object ``i`` is of kind
``KINDS[i % len(KINDS)]`` with the seed ``SeedSequence([seed, i])``; numpy's PCG64 streams are stable,
so every machine draws the same proportions and options (tests pin the part lists), and the
primitives' tessellation is trimesh's.
:func:`write_evaluation_set` writes them as GLB files with one named node per part.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from ..parts import Part

EVAL_SET_SEED = 0
EVAL_SET_SIZE = 22  # two objects of each kind

# Well-separated, saturated colours (none close to the white background).
PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.10, 0.10), (0.10, 0.60, 0.15), (0.12, 0.30, 0.85), (0.95, 0.75, 0.05),
    (0.60, 0.15, 0.75), (0.05, 0.70, 0.75), (0.95, 0.45, 0.05), (0.45, 0.25, 0.10),
    (0.95, 0.40, 0.65), (0.40, 0.40, 0.40), (0.55, 0.80, 0.10), (0.05, 0.10, 0.35),
    (0.55, 0.05, 0.20), (0.40, 0.65, 0.95),
)

_Z_TO_Y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # a proper rotation taking +z to +y


@dataclass(frozen=True)
class ProceduralObject:
    """One generated object: its kind, the seed that made it, a file-safe name, its parts (glTF frame)."""

    kind: str
    seed: int
    name: str
    parts: tuple[Part, ...]


# ----------------------------------------------------------------------------------------------------
# Primitives (trimesh builds them along +z; our objects stand along +y)


def _mesh_to_y(mesh, center: Sequence[float]):
    mesh.vertices = np.asarray(mesh.vertices) @ _Z_TO_Y.T + np.asarray(center, dtype=np.float64)
    return mesh


def box(size: Sequence[float], center: Sequence[float]):
    import trimesh

    mesh = trimesh.creation.box(extents=size)
    mesh.vertices = np.asarray(mesh.vertices) + np.asarray(center, dtype=np.float64)
    return mesh


def cylinder(radius: float, height: float, center: Sequence[float], axis: str = "y", sections: int = 24):
    import trimesh

    mesh = trimesh.creation.cylinder(radius=radius, height=height, sections=sections)
    rotation = {"y": _Z_TO_Y, "z": np.eye(3), "x": np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])}[axis]
    mesh.vertices = np.asarray(mesh.vertices) @ rotation.T + np.asarray(center, dtype=np.float64)
    return mesh


def sphere(radius: float, center: Sequence[float], subdivisions: int = 2):
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    mesh.vertices = np.asarray(mesh.vertices) + np.asarray(center, dtype=np.float64)
    return mesh


def lathe(profile: Sequence[Sequence[float]], center: Sequence[float], sections: int = 24):
    """A closed (radius, height) profile revolved about +y: shades, cups, cones, nozzles."""
    import trimesh

    mesh = trimesh.creation.revolve(np.asarray(profile, dtype=np.float64), sections=sections)
    if mesh.volume < 0:  # the profile's orientation decides the winding
        mesh.invert()
    return _mesh_to_y(mesh, center)


def torus(major: float, minor: float, center: Sequence[float], axis: str = "z"):
    import trimesh

    mesh = trimesh.creation.torus(major_radius=major, minor_radius=minor, major_sections=24, minor_sections=10)
    if axis == "y":
        mesh.vertices = np.asarray(mesh.vertices) @ _Z_TO_Y.T
    mesh.vertices = np.asarray(mesh.vertices) + np.asarray(center, dtype=np.float64)
    return mesh


# ----------------------------------------------------------------------------------------------------
# Object kinds: each returns [(part name, trimesh)], front facing +z, standing on y = 0


def _table(rng: np.random.Generator):
    width, depth, height = rng.uniform(1.2, 2.0), rng.uniform(0.7, 1.1), rng.uniform(0.7, 0.95)
    thick, leg = rng.uniform(0.05, 0.09), rng.uniform(0.05, 0.09)
    round_legs = rng.random() < 0.5
    parts = [("top", box((width, thick, depth), (0, height - thick / 2, 0)))]
    inset_x, inset_z = width / 2 - leg * 1.5, depth / 2 - leg * 1.5
    for side_z, label_z in ((inset_z, "front"), (-inset_z, "back")):
        for side_x, label_x in ((-inset_x, "left"), (inset_x, "right")):
            center = (side_x, (height - thick) / 2, side_z)
            mesh = (cylinder(leg / 2, height - thick, center) if round_legs else box((leg, height - thick, leg), center))
            parts.append((f"leg_{label_z}_{label_x}", mesh))
    if rng.random() < 0.5:
        parts.append(("shelf", box((2 * inset_x, thick * 0.7, 2 * inset_z), (0, height * 0.3, 0))))
    return parts


def _chair(rng: np.random.Generator):
    seat, seat_height = rng.uniform(0.45, 0.6), rng.uniform(0.42, 0.5)
    thick, leg, back_height = rng.uniform(0.05, 0.08), rng.uniform(0.04, 0.06), rng.uniform(0.4, 0.6)
    parts = [("seat", box((seat, thick, seat), (0, seat_height, 0)))]
    inset = seat / 2 - leg / 2
    for z, label_z in ((inset, "front"), (-inset, "back")):
        for x, label_x in ((-inset, "left"), (inset, "right")):
            parts.append((f"leg_{label_z}_{label_x}", box((leg, seat_height - thick / 2, leg), (x, (seat_height - thick / 2) / 2, z))))
    parts.append(("backrest", box((seat, back_height, thick), (0, seat_height + back_height / 2, -seat / 2 + thick / 2))))
    if rng.random() < 0.5:
        arm_y = seat_height + rng.uniform(0.18, 0.25)
        for x, label in ((-seat / 2 + leg / 2, "left"), (seat / 2 - leg / 2, "right")):
            parts.append((f"armrest_{label}", box((leg * 1.2, thick * 0.8, seat * 0.9), (x, arm_y, 0.0))))
    return parts


def _lamp(rng: np.random.Generator):
    base_r, base_h = rng.uniform(0.12, 0.2), rng.uniform(0.03, 0.06)
    stem_h, stem_r = rng.uniform(0.35, 0.6), rng.uniform(0.012, 0.025)
    shade_h, shade_bottom, shade_top = rng.uniform(0.2, 0.3), rng.uniform(0.15, 0.25), rng.uniform(0.07, 0.13)
    wall = 0.012
    shade_y = base_h + stem_h - shade_h * 0.35
    parts = [
        ("base", cylinder(base_r, base_h, (0, base_h / 2, 0), sections=32)),
        ("stem", cylinder(stem_r, stem_h, (0, base_h + stem_h / 2, 0), sections=12)),
        ("shade", lathe([(shade_bottom, 0.0), (shade_top, shade_h), (shade_top - wall, shade_h),
                         (shade_bottom - wall, 0.0)], (0, shade_y, 0), sections=32)),
    ]
    if rng.random() < 0.5:
        parts.append(("finial", sphere(stem_r * 2.2, (0, shade_y + shade_h + stem_r * 2.0, 0), subdivisions=1)))
    return parts


def _snowman(rng: np.random.Generator):
    r1, r2, r3 = rng.uniform(0.3, 0.38), rng.uniform(0.22, 0.27), rng.uniform(0.15, 0.19)
    y1 = r1
    y2 = y1 + r1 + r2 * 0.7
    y3 = y2 + r2 + r3 * 0.7
    brim_h, crown_h = 0.025, rng.uniform(0.14, 0.22)
    top = y3 + r3 * 0.8
    parts = [
        ("bottom_ball", sphere(r1, (0, y1, 0), 3)),
        ("middle_ball", sphere(r2, (0, y2, 0), 3)),
        ("head", sphere(r3, (0, y3, 0), 3)),
        ("hat_brim", cylinder(r3 * 1.15, brim_h, (0, top, 0), sections=32)),
        ("hat_crown", cylinder(r3 * 0.75, crown_h, (0, top + crown_h / 2, 0), sections=32)),
        ("nose", lathe([(0.0, 0.0), (0.035, 0.0), (0.0, 0.16)], (0, 0, 0), sections=16)),
    ]
    # the nose is built along +y, then turned to point forwards (+z) from the face
    nose = parts[-1][1]
    nose.vertices = np.asarray(nose.vertices) @ np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]).T + np.array([0, y3, r3 * 0.9])
    if rng.random() < 0.6:
        length = rng.uniform(0.3, 0.45)
        for sign, label in ((-1, "left"), (1, "right")):
            arm = cylinder(0.018, length, (0, 0, 0), axis="x", sections=8)
            tilt = np.radians(20) * sign
            rotation = np.array([[np.cos(tilt), -np.sin(tilt), 0], [np.sin(tilt), np.cos(tilt), 0], [0, 0, 1]])
            arm.vertices = np.asarray(arm.vertices) @ rotation.T + np.array([sign * (r2 + length * 0.4), y2 + 0.05, 0])
            parts.append((f"arm_{label}", arm))
    return parts


def _car(rng: np.random.Generator):
    length, width, body_h = rng.uniform(1.6, 2.2), rng.uniform(0.8, 1.0), rng.uniform(0.3, 0.4)
    wheel_r, wheel_w = rng.uniform(0.16, 0.22), rng.uniform(0.1, 0.14)
    clearance = wheel_r * 0.9
    parts = [("body", box((width, body_h, length), (0, clearance + body_h / 2, 0)))]
    cabin_l = length * rng.uniform(0.4, 0.55)
    cabin_h = rng.uniform(0.25, 0.35)
    parts.append(("cabin", box((width * 0.85, cabin_h, cabin_l), (0, clearance + body_h + cabin_h / 2, -length * 0.08))))
    axle = length / 2 - wheel_r * 1.4
    for z, label_z in ((axle, "front"), (-axle, "back")):
        for x, label_x in ((-(width / 2 + wheel_w / 2 - 0.02), "left"), (width / 2 + wheel_w / 2 - 0.02, "right")):
            parts.append((f"wheel_{label_z}_{label_x}", cylinder(wheel_r, wheel_w, (x, wheel_r, z), axis="x", sections=24)))
    if rng.random() < 0.5:
        parts.append(("spoiler", box((width * 0.9, 0.04, 0.18), (0, clearance + body_h + 0.12, -length / 2 + 0.1))))
    return parts


def _truck(rng: np.random.Generator):
    length, width = rng.uniform(2.2, 2.8), rng.uniform(0.9, 1.1)
    wheel_r, wheel_w = rng.uniform(0.18, 0.24), 0.14
    chassis_y = wheel_r * 1.1
    cab_l = rng.uniform(0.5, 0.7)
    parts = [("chassis", box((width * 0.9, 0.12, length), (0, chassis_y, 0)))]
    parts.append(("cab", box((width, 0.6, cab_l), (0, chassis_y + 0.36, length / 2 - cab_l / 2))))
    cargo_l = length - cab_l - 0.08
    parts.append(("cargo_box", box((width, 0.75, cargo_l), (0, chassis_y + 0.435, -length / 2 + cargo_l / 2))))
    axles = [length / 2 - wheel_r * 1.5, -length / 2 + wheel_r * 1.5]
    if rng.random() < 0.5:
        axles.append(-length / 2 + wheel_r * 3.8)
    for index, z in enumerate(axles):
        for x, label in ((-(width / 2 + wheel_w / 2 - 0.02), "left"), (width / 2 + wheel_w / 2 - 0.02, "right")):
            parts.append((f"wheel_{index}_{label}", cylinder(wheel_r, wheel_w, (x, wheel_r, z), axis="x")))
    return parts


def _mug(rng: np.random.Generator):
    radius, height, wall = rng.uniform(0.3, 0.4), rng.uniform(0.6, 0.85), 0.03
    lift = 0.0
    parts = []
    if rng.random() < 0.5:
        saucer_r = radius * rng.uniform(1.5, 1.8)
        parts.append(("saucer", cylinder(saucer_r, 0.04, (0, 0.02, 0), sections=40)))
        lift = 0.04
    parts.append(("cup", lathe([(0.0, 0.0), (radius, 0.0), (radius, height), (radius - wall, height),
                                (radius - wall, wall), (0.0, wall)], (0, lift, 0), sections=40)))
    handle_r = height * rng.uniform(0.25, 0.32)
    parts.append(("handle", torus(handle_r, 0.035, (radius + handle_r * 0.45, lift + height * 0.5, 0), axis="z")))
    return parts


def _rocket(rng: np.random.Generator):
    radius, body_h, nose_h = rng.uniform(0.14, 0.2), rng.uniform(0.9, 1.3), rng.uniform(0.3, 0.45)
    base = 0.12
    parts = [
        ("nozzle", lathe([(radius * 0.55, 0.0), (radius * 0.8, 0.0), (radius * 0.5, base), (radius * 0.3, base)], (0, 0, 0))),
        ("body", cylinder(radius, body_h, (0, base + body_h / 2, 0), sections=32)),
        ("nose_cone", lathe([(0.0, 0.0), (radius, 0.0), (0.0, nose_h)], (0, base + body_h, 0), sections=32)),
    ]
    fins = 3 if rng.random() < 0.5 else 4
    fin_h, fin_w = rng.uniform(0.25, 0.4), rng.uniform(0.15, 0.22)
    for index in range(fins):
        angle = 2 * np.pi * index / fins + np.pi / 4
        fin = box((fin_w, fin_h, 0.03), (0, 0, 0))
        rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
        offset = np.array([np.cos(angle), 0, -np.sin(angle)]) * (radius + fin_w / 2 - 0.02)
        fin.vertices = np.asarray(fin.vertices) @ rotation.T + offset + np.array([0, base + fin_h / 2, 0])
        parts.append((f"fin_{index}", fin))
    if rng.random() < 0.5:
        parts.append(("window", cylinder(radius * 0.35, 0.04, (0, base + body_h * 0.7, radius), axis="z", sections=24)))
    return parts


def _tree(rng: np.random.Generator):
    trunk_h, trunk_r = rng.uniform(0.3, 0.5), rng.uniform(0.06, 0.1)
    parts = [("trunk", cylinder(trunk_r, trunk_h, (0, trunk_h / 2, 0), sections=16))]
    if rng.random() < 0.3:
        crown = rng.uniform(0.35, 0.5)
        parts.append(("crown", sphere(crown, (0, trunk_h + crown * 0.8, 0), 3)))
        return parts
    tiers = int(rng.integers(1, 4))
    y, radius = trunk_h * 0.8, rng.uniform(0.45, 0.6)
    for index in range(tiers):
        height = radius * rng.uniform(1.1, 1.4)
        parts.append((f"foliage_{index}", lathe([(0.0, 0.0), (radius, 0.0), (0.0, height)], (0, y, 0), sections=24)))
        y += height * 0.5
        radius *= 0.75
    return parts


def _bookshelf(rng: np.random.Generator):
    width, height, depth, board = rng.uniform(0.8, 1.2), rng.uniform(1.2, 1.8), rng.uniform(0.3, 0.4), 0.04
    shelves = int(rng.integers(1, 4))
    parts = [
        ("side_left", box((board, height, depth), (-width / 2 + board / 2, height / 2, 0))),
        ("side_right", box((board, height, depth), (width / 2 - board / 2, height / 2, 0))),
        ("top", box((width - 2 * board, board, depth), (0, height - board / 2, 0))),
        ("bottom", box((width - 2 * board, board, depth), (0, board / 2 + 0.05, 0))),
        ("back", box((width - 2 * board, height - 0.05, 0.02), (0, height / 2 + 0.025, -depth / 2 + 0.01))),
    ]
    for index in range(shelves):
        y = 0.05 + board + (height - 0.05 - 2 * board) * (index + 1) / (shelves + 1)
        parts.append((f"shelf_{index}", box((width - 2 * board, board, depth - 0.02), (0, y, 0.01))))
    return parts


def _robot(rng: np.random.Generator):
    torso_w, torso_h, torso_d = rng.uniform(0.45, 0.6), rng.uniform(0.5, 0.7), rng.uniform(0.25, 0.35)
    leg_h, leg_w = rng.uniform(0.45, 0.6), rng.uniform(0.12, 0.16)
    head = rng.uniform(0.22, 0.3)
    torso_y = leg_h + torso_h / 2
    parts = [
        ("torso", box((torso_w, torso_h, torso_d), (0, torso_y, 0))),
        ("head", box((head, head, head), (0, leg_h + torso_h + head / 2 + 0.02, 0))),
    ]
    for sign, label in ((-1, "left"), (1, "right")):
        parts.append((f"leg_{label}", box((leg_w, leg_h, leg_w), (sign * torso_w * 0.28, leg_h / 2, 0))))
        arm_h = torso_h * rng.uniform(0.8, 1.0)
        parts.append((f"arm_{label}", box((0.1, arm_h, 0.1), (sign * (torso_w / 2 + 0.07), leg_h + torso_h - arm_h / 2, 0))))
    if rng.random() < 0.5:
        top = leg_h + torso_h + head + 0.02
        parts.append(("antenna", cylinder(0.012, 0.15, (0, top + 0.075, 0), sections=8)))
    return parts


GENERATORS: dict[str, Callable[[np.random.Generator], list]] = {
    "table": _table, "chair": _chair, "lamp": _lamp, "snowman": _snowman, "car": _car, "truck": _truck,
    "mug": _mug, "rocket": _rocket, "tree": _tree, "bookshelf": _bookshelf, "robot": _robot,
}
KINDS: tuple[str, ...] = tuple(GENERATORS)


def _as_part(name: str, mesh, color: np.ndarray) -> Part:
    vertices = torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32))
    colors = torch.from_numpy(np.broadcast_to(color.astype(np.float32), vertices.shape).copy())
    return Part(name=name, vertices=vertices, faces=torch.from_numpy(np.asarray(mesh.faces, dtype=np.int64)),
                vertex_colors=colors, display_color=tuple(float(c) for c in color), source="procedural")


def generate_object(kind: str, seed: int, name: Optional[str] = None) -> ProceduralObject:
    """One object of ``kind`` (see ``KINDS``), the same for the same seed."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown object kind {kind!r}; kinds are {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    meshes = GENERATORS[kind](rng)
    if not 2 <= len(meshes) <= 10:
        raise AssertionError(f"{kind} made {len(meshes)} parts; kinds must make 2..10")
    order = rng.permutation(len(PALETTE))[: len(meshes)]
    parts = tuple(_as_part(part_name, mesh, np.asarray(PALETTE[i])) for (part_name, mesh), i in zip(meshes, order))
    return ProceduralObject(kind=kind, seed=int(seed), name=name or f"{kind}_{seed}", parts=parts)


def object_seed(set_seed: int, index: int) -> int:
    return int(np.random.SeedSequence([set_seed, index]).generate_state(1)[0])


def evaluation_set(count: int = EVAL_SET_SIZE, seed: int = EVAL_SET_SEED) -> list[ProceduralObject]:
    """``count`` objects cycling through ``KINDS``; named ``"{index:03d}_{kind}"``."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    objects = []
    for index in range(count):
        kind = KINDS[index % len(KINDS)]
        objects.append(generate_object(kind, object_seed(seed, index), name=f"{index:03d}_{kind}"))
    return objects


# ----------------------------------------------------------------------------------------------------
# Writing


def scene_glb_bytes(parts: Sequence[Part], object_name: str = "object") -> bytes:
    """The GLB Save Parts writes: a root node, one child node per part named after it (pivot at its
    centre), linear ``COLOR_0``, a material per part."""
    from ..assembly.export import parts_glb_bytes

    return parts_glb_bytes(parts, object_name)


def write_atomically(path: Path, data: bytes, overwrite: bool = False) -> None:
    """Write ``data`` to a temporary file beside ``path``, then move it into place in one step."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    handle, temporary = tempfile.mkstemp(prefix=".partgen-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # refuses to replace a file that appeared meanwhile
    finally:
        Path(temporary).unlink(missing_ok=True)


def write_evaluation_set(folder: Union[str, Path], count: int = EVAL_SET_SIZE, seed: int = EVAL_SET_SEED,
                         overwrite: bool = False) -> list[Path]:
    """Write ``evaluation_set(count, seed)`` into ``folder`` as ``{name}.glb``; return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for obj in evaluation_set(count, seed):
        path = folder / f"{obj.name}.glb"
        write_atomically(path, scene_glb_bytes(obj.parts, obj.name), overwrite=overwrite)
        paths.append(path)
    return paths
