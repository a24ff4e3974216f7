"""What an artist sees: Save Parts output opened with Blender's own importers (``bpy``, Blender as a
Python module) and rendered in Workbench flat shading, the Solid view.

bpy is not a dependency of the pack. These tests run where it can be imported: set
``PARTGEN_BPY_PATH`` to extra import folders (os.pathsep-separated), e.g. after
``pip install --target /opt/bpy bpy==5.0.1`` and ``pip install --target /opt/bpy-numpy "numpy<2"``
(the bpy 5.0.1 wheel is cp311 and its glTF importer was built against NumPy 1.x):
``PARTGEN_BPY_PATH=/opt/bpy-numpy:/opt/bpy``. Otherwise they skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partgen_models.assembly.export import ExportOptions, export_parts
from partgen_models.evaluation.procedural import generate_object

PROBE = Path(__file__).with_name("blender_probe.py")


def _blender_env() -> dict:
    env = dict(os.environ)
    extra = os.environ.get("PARTGEN_BPY_PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [extra, env.get("PYTHONPATH", "")] if p)
    return env


@pytest.fixture(scope="module")
def blender_env() -> dict:
    env = _blender_env()
    check = subprocess.run([sys.executable, "-c", "import bpy"], env=env, capture_output=True, timeout=120)
    if check.returncode != 0:
        pytest.skip("bpy is not importable; set PARTGEN_BPY_PATH (see this module's docstring)")
    return env


def _probe(files: list[Path], env: dict) -> dict:
    proc = subprocess.run([sys.executable, str(PROBE), "--", *map(str, files)], env=env, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("PROBE"):])


@pytest.fixture(scope="module")
def car_exports(tmp_path_factory, blender_env):
    folder = tmp_path_factory.mktemp("blender")
    parts = list(generate_object("car", 0).parts)
    results = {fmt: export_parts(parts, folder, ExportOptions(f"car_{fmt}", part_format=fmt, roughness=0.6))
               for fmt in ("glb", "obj", "ply", "stl")}
    files = [folder / results["glb"].scene] + [folder / results[fmt].part_files[0] for fmt in ("obj", "ply", "stl")]
    return parts, folder, results, _probe(files, blender_env)


def test_blender_sees_the_hierarchy_pivots_materials_and_normals(car_exports):
    parts, folder, results, report = car_exports
    objects = {o["name"]: o for o in report["files"][str(folder / results["glb"].scene)]}
    assert objects["car_glb"]["type"] == "EMPTY" and objects["car_glb"]["parent"] is None
    for part in parts:
        seen = objects[part.name]  # named exactly, no DefaultMaterial, no ".001"
        assert seen["parent"] == "car_glb" and seen["materials"] == [part.name]
        assert seen["metallic"] == 0.0 and seen["roughness"] == pytest.approx(0.6)
        assert seen["custom_normals"], part.name  # the file's smooth/split normals, not Blender's flat ones
        assert seen["props"]["partgen"]["faces"] == part.num_faces
        # the pivot is the part's centre (glTF y up → Blender z up: (x, y, z) → (x, -z, y))
        low, high = part.vertices.numpy().min(0), part.vertices.numpy().max(0)
        centre = (low + high) / 2
        assert seen["location"] == pytest.approx([centre[0], -centre[2], centre[1]], abs=1e-5)
        # base colour: Blender shows the display colour (its Base Color input is linear)
        shown = np.where(np.array(seen["base_color"]) <= 0.0031308, np.array(seen["base_color"]) * 12.92,
                         1.055 * np.array(seen["base_color"]) ** (1 / 2.4) - 0.055)
        assert shown == pytest.approx(part.vertex_colors[0].numpy(), abs=1e-4)


def test_the_solid_view_shows_the_display_colours(car_exports):
    parts, folder, results, _ = car_exports
    image = np.asarray(Image.open(str(folder / results["glb"].scene) + ".png").convert("RGB")).astype(int)
    for name in ("body", "cabin"):  # the parts facing the camera
        colour = np.round(np.array(next(p for p in parts if p.name == name).display_color) * 255)
        close = (np.abs(image - colour).max(-1) <= 2).sum()
        assert close > 500, (name, colour, close)


def test_per_part_obj_ply_stl_import_upright_and_named(car_exports):
    parts, folder, results, report = car_exports
    body = parts[0]
    height = float(body.vertices[:, 1].max() - body.vertices[:, 1].min())
    for fmt in ("obj", "ply", "stl"):
        (seen,) = report["files"][str(folder / results[fmt].part_files[0])]
        extent = np.array(seen["world_max"]) - np.array(seen["world_min"])
        assert extent[2] == pytest.approx(height, abs=1e-4), fmt  # Blender z up = the part's height
        assert seen["world_min"][2] == pytest.approx(float(body.vertices[:, 1].min()), abs=1e-4), fmt
    (obj,) = report["files"][str(folder / results["obj"].part_files[0])]
    assert obj["name"] == "body" and obj["materials"] == ["body"]
    assert not obj["base_color_linked"]
    linear = np.array(obj["base_color"])
    shown = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    assert shown == pytest.approx(body.vertex_colors[0].numpy(), abs=1e-3)


def test_a_textured_part_imports_with_its_image_on_base_colour(tmp_path, blender_env):
    pytest.importorskip("xatlas")
    import torch
    import trimesh

    from partgen_models.parts import Part
    from partgen_models.reconstruction.texture import TextureOptions, bake_texture

    ball = trimesh.creation.icosphere(2, radius=0.5)
    vertices, faces = torch.tensor(ball.vertices, dtype=torch.float32), torch.tensor(ball.faces)
    baked = bake_texture("ball", vertices, faces, TextureOptions(size=512, source="field"),
                         field_color=lambda p: (p + 0.5).clamp(0, 1))
    part = Part("ball", baked.vertices, baked.faces, torch.full_like(baked.vertices, 0.5), uvs=baked.uvs, texture=baked.texture)
    result = export_parts([part], tmp_path, ExportOptions("textured/ball"))
    report = _probe([tmp_path / result.scene], blender_env)
    seen = {o["name"]: o for o in report["files"][str(tmp_path / result.scene)]}["ball"]
    assert seen["base_color_from"] == "ShaderNodeTexImage" and seen["image_size"] == [512, 512]
    assert seen["image_colorspace"] == "sRGB" and seen["uv_layers"]
    assert seen["parent"] == "ball_object"  # the root yields its name to the part of the same name
