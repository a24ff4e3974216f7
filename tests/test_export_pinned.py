"""Export and checkpoint-loading behaviour pinned against plausible bugs (tier 1).

Part names that sanitising changes (non-ASCII, slashes), a symlinked subfolder inside the output
folder that points outside it, an unknown key in a checkpoint, and the display colours a selection
gives, which must reach the manifest through completion and reconstruction.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import trimesh
from safetensors.torch import load_file, save_file

from partgen_models.assembly.export import ExportError, ExportOptions, export_parts
from partgen_models.cameras import LAYOUTS
from partgen_models.modules import match_transformers_layout
from partgen_models.multiview import load_zero123plus
from partgen_models.parts import Part
from partgen_models.reconstruction import reconstruct as rec
from partgen_models.reconstruction.loader import load_instantmesh
from partgen_models.reconstruction.options import ReconstructionOptions
from partgen_models.testing.tiny_instantmesh import write_tiny_instantmesh
from partgen_models.views import PartViews
from partgen_models.weights import WeightsError
from tiny_models import tiny_models_dir

pytestmark = pytest.mark.tier1


def _box(name: str, shift: float = 0.0, display_color=None) -> Part:
    mesh = trimesh.creation.box()
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32) + shift
    return Part(name, vertices, torch.tensor(mesh.faces, dtype=torch.long), torch.full_like(vertices, 0.5),
                display_color=display_color)


def test_nodes_keep_the_part_names_while_files_are_sanitised(tmp_path):
    parts = [_box("Rückenlehne/links"), _box("座面", 2.0)]
    result = export_parts(parts, tmp_path, ExportOptions(filename_prefix="chair", part_format="glb"))
    scene = trimesh.load(tmp_path / result.scene, process=False)
    assert sorted(scene.graph.nodes_geometry) == sorted(["Rückenlehne/links", "座面"])
    assert [f.name for f in result.part_files] == ["chair_00001_R_ckenlehne_links.glb", "chair_00001__.glb"]
    single = trimesh.load(tmp_path / result.part_files[0], process=False)
    assert list(single.graph.nodes_geometry) == ["Rückenlehne/links"]
    manifest = json.loads((tmp_path / result.manifest).read_text(encoding="utf-8"))
    assert [p["name"] for p in manifest["parts"]] == ["Rückenlehne/links", "座面"]
    assert manifest["parts"][1]["file"] == "chair_00001__.glb"


def test_a_symlinked_subfolder_leading_out_of_the_output_folder_is_refused(tmp_path):
    output, elsewhere = tmp_path / "output", tmp_path / "elsewhere"
    output.mkdir()
    elsewhere.mkdir()
    (output / "shared").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ExportError, match="'shared/chair' leaves the output folder"):
        export_parts([_box("seat")], output, ExportOptions(filename_prefix="shared/chair"))
    assert list(elsewhere.iterdir()) == []
    inside = output / "runs"
    inside.mkdir()
    (output / "latest").symlink_to(inside, target_is_directory=True)  # a link that stays inside is fine
    result = export_parts([_box("seat")], output, ExportOptions(filename_prefix="latest/chair"))
    assert (inside / result.scene.name).is_file()


def test_an_unknown_checkpoint_key_reaches_the_strict_check(tmp_path):
    expected = {"text_model.embeddings.token_embedding.weight", "text_model.final_layer_norm.weight"}
    state = {"text_model.embeddings.token_embedding.weight": torch.zeros(1), "text_model.final_layer_norm.weight": torch.zeros(1),
             "text_model.embeddings.position_ids": torch.zeros(1), "lm_head.extra": torch.zeros(1)}
    mapped = match_transformers_layout(state, expected)
    assert set(mapped) == expected | {"lm_head.extra"}  # the known stale buffer dropped, the unknown key kept
    flat = match_transformers_layout({"embeddings.token_embedding.weight": torch.zeros(1)}, expected)
    assert set(flat) == {"text_model.embeddings.token_embedding.weight"}
    folder = tmp_path / "zero123plus-v1.2"
    shutil.copytree(tiny_models_dir() / "zero123plus-v1.2", folder)
    weights = folder / "vision_encoder" / "model.safetensors"
    tensors = load_file(weights)
    tensors["vision_model.mystery.weight"] = torch.zeros(2)
    save_file(tensors, weights)
    with pytest.raises(WeightsError, match=r"1 unexpected keys \(vision_model\.mystery\.weight\)"):
        load_zero123plus(folder)


def test_selection_colours_reach_the_manifest_through_reconstruction(tmp_path, monkeypatch):
    model = load_instantmesh(write_tiny_instantmesh(tmp_path / "instant_nerf_base.ckpt", "nerf"))
    monkeypatch.setattr(rec, "_features", lambda model, planes, points: points.to(torch.float32))
    monkeypatch.setattr(model.decoder, "density_and_color",
                        lambda p: (20.0 * torch.sigmoid((0.4 - p.norm(dim=-1)) * 40.0), (p + 1) / 2))
    layout = LAYOUTS["zero123pp_v12"]
    alpha = torch.zeros(2, 6, 32, 32)
    alpha[:, :, 8:24, 8:24] = 1.0
    images = (0.3 * alpha[..., None] + (1 - alpha[..., None])).expand(-1, -1, -1, -1, 3).contiguous()
    colours = ((1.0, 0.0, 0.0), (0.0, 0.4, 1.0))
    views = PartViews(images, alpha, layout.camera_to_world(), layout.fov_deg, layout.name, (1.0,) * 3,
                      ("seat", "leg"), colours)
    parts = rec.reconstruct_parts(model, views, ReconstructionOptions(resolution=24))
    assert [p.display_color for p in parts] == list(colours)
    result = export_parts(parts, tmp_path / "out", ExportOptions(filename_prefix="c"))
    manifest = json.loads((tmp_path / "out" / result.manifest).read_text())
    assert [p["display_color"] for p in manifest["parts"]] == [list(c) for c in colours]
    with pytest.raises(ValueError, match="2 parts but 1 display colours"):
        PartViews(images, alpha, layout.camera_to_world(), layout.fov_deg, layout.name, (1.0,) * 3, ("seat", "leg"),
                  colours[:1])
