"""Bad inputs a user wires by mistake, found by an audit of every node: each gets a clear error naming the
input (or, where that is the sensible behaviour, works). Tier 1: no ComfyUI, tiny tensors only."""

from __future__ import annotations

import pytest
import torch

from partgen_models.cameras import LAYOUTS
from partgen_models.multiview.preprocess import InputImageError, prepare_condition_images
from partgen_models.segmentation.segment import Segmentation
from partgen_models.segmentation.select import PartSelection, SelectionError, overlay, select_parts
from partgen_models.views import MultiView


def _object_image(batch: int = 1, size: int = 64, channels: int = 3) -> torch.Tensor:
    """A grey square on white: ``[B,size,size,channels]``."""
    image = torch.ones(batch, size, size, channels)
    image[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 0.3
    return image


def _prepare(image, mask=None):
    return prepare_condition_images(image, mask, background=1.0, size=64)


# --- Multi-View's image and mask --------------------------------------------------------------------------


def test_empty_image_batch_is_refused_by_name():
    with pytest.raises(InputImageError, match=r"image is an empty batch \(0 images\)"):
        _prepare(torch.ones(0, 64, 64, 3))


def test_grayscale_image_is_used_as_rgb():
    rgb = _object_image()
    gray = _object_image(channels=1)
    assert torch.equal(_prepare(gray), _prepare(rgb))


def test_grayscale_with_alpha_keeps_its_alpha():
    rgba = _object_image(channels=4)
    rgba[..., 3] = 0.0
    rgba[:, 16:48, 16:48, 3] = 1.0  # the alpha marks the square
    gray_alpha = torch.cat([rgba[..., :1], rgba[..., 3:]], dim=-1)
    assert torch.equal(_prepare(gray_alpha), _prepare(rgba))


def test_image_of_another_shape_names_what_is_expected():
    with pytest.raises(InputImageError, match=r"expected an IMAGE \[B,H,W,3\].*got shape \(1, 64, 64, 5\)"):
        _prepare(torch.ones(1, 64, 64, 5))


def test_nan_mask_is_refused_not_ignored():
    # before: a NaN mask read as "empty" and the object was silently guessed from the background
    mask = torch.full((1, 64, 64), float("nan"))
    with pytest.raises(InputImageError, match="mask 0 contains NaN or infinite values"):
        _prepare(_object_image(), mask)


# --- Select Parts: the views must be the segmented ones ----------------------------------------------------


def _views(size: int) -> MultiView:
    layout = LAYOUTS["zero123pp_v12"]
    images = torch.ones(6, size, size, 3)
    alpha = torch.zeros(6, size, size)
    alpha[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0
    images[alpha > 0] = 0.3
    return MultiView(images, alpha, layout.camera_to_world(), layout.fov_deg, layout.name, (1.0, 1.0, 1.0), images[0])


def _segmentation(size: int, proposals: int = 3) -> Segmentation:
    masks = torch.zeros(proposals, 6, size, size, dtype=torch.bool)
    for k in range(proposals):
        masks[k, :, size // 4 + 2 * k : size // 4 + 2 * k + 4, size // 4 : 3 * size // 4] = True
    return Segmentation(torch.zeros(0), masks, torch.ones(proposals), (None,) * proposals, "zero123pp_v12")


def test_select_parts_with_other_views_names_the_views():
    # before: IndexError "The shape of the mask [6, 32, 32] at index 1 does not match ..."
    parts = select_parts(_segmentation(32), PartSelection(top_k=2))
    with pytest.raises(SelectionError, match="connect the same views to PartGen Segment and PartGen Select Parts"):
        overlay(_views(64), parts)
    assert overlay(_views(32), parts).shape == (1, 96, 64, 3)


# --- Loaders given the wrong files ------------------------------------------------------------------------


def test_partgen_json_that_is_not_an_object_is_named_and_skipped_in_the_list(tmp_path):
    from partgen_models.partgen_checkpoint import list_partgen_checkpoints, read_partgen_checkpoint
    from partgen_models.weights import WeightsError

    stray = tmp_path / "someone-elses-model"
    stray.mkdir()
    (stray / "partgen.json").write_text("[1, 2]")
    # before: AttributeError 'list' object has no attribute 'get', in the loader's node list (define_schema)
    assert list_partgen_checkpoints([tmp_path], "partgen-segmentation") == []
    with pytest.raises(WeightsError, match=r"partgen.json holds a JSON list, not an object; expected \{\"format\""):
        read_partgen_checkpoint(stray, "partgen-segmentation")
    (stray / "partgen.json").write_text('{"format": "partgen-segmentation", "version": 1, "palette": [[0, 0], "red"]}')
    with pytest.raises(WeightsError, match=r"'palette' must be a list of \[r, g, b\] colours with values in 0..1"):
        read_partgen_checkpoint(stray, "partgen-segmentation")


def test_model_index_that_is_not_an_object_does_not_break_the_model_list(tmp_path):
    from partgen_models.multiview.catalog import list_multiview_models

    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "model_index.json").write_text("5")  # before: TypeError in the node list
    assert "odd" not in list_multiview_models([tmp_path])


def test_zero123plus_folder_without_its_tokenizer_names_the_missing_folder(tmp_path):
    import shutil

    from partgen_models.multiview import load_zero123plus
    from partgen_models.weights import WeightsError
    from tiny_models import tiny_models_dir

    folder = tmp_path / "zero123plus-v1.2"
    shutil.copytree(tiny_models_dir() / "zero123plus-v1.2", folder)
    shutil.rmtree(folder / "tokenizer")
    # before: transformers' "Repo id must be in the form 'repo_name' or 'namespace/repo_name'"
    with pytest.raises(WeightsError, match=r"lacks the folder\(s\) tokenizer of a Zero123\+\+ model"):
        load_zero123plus(folder)


def test_sam3_loader_given_a_sam2_folder_refuses_before_loading(tmp_path):
    from partgen_models.segmentation.sam3_backend import load_sam3_segmenter
    from partgen_models.weights import WeightsError

    (tmp_path / "config.json").write_text('{"model_type": "sam2_video"}')  # no weights needed: refused first
    with pytest.raises(WeightsError, match="holds a 'sam2_video' model, not a SAM 3 checkpoint"):
        load_sam3_segmenter(tmp_path)


# --- Files: names Windows reserves, no temporaries left by a failed write -------------------------------


def test_prefix_folders_named_like_windows_devices_are_renamed():
    from pathlib import Path

    from partgen_models.assembly.export import sanitize_prefix

    # before: a folder "nul" or "con.txt" (which Windows cannot create) was used as given
    assert sanitize_prefix("nul/aux") == (Path("nul_"), "aux")  # the file name gets "_00001" anyway
    assert sanitize_prefix("CON.txt/com1/chair") == (Path("CON_.txt", "com1_"), "chair")
    assert sanitize_prefix("console/chair") == (Path("console"), "chair")


def test_queue_client_leaves_no_temporary_when_the_write_fails(tmp_path):
    from partgen_tools.queue_client import save_file

    with pytest.raises(TypeError):
        save_file("not bytes", {"filename": "a.glb", "subfolder": "run"}, tmp_path)  # fails inside the write
    assert list((tmp_path / "run").iterdir()) == []


def test_headless_png_writer_leaves_no_temporary_when_saving_fails(tmp_path, monkeypatch):
    from PIL import Image

    from partgen_models import cli

    def fail_half_way(self, path, *args, **kwargs):
        open(path, "wb").write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", fail_half_way)
    with pytest.raises(OSError, match="No space left"):
        cli._save_png(torch.zeros(4, 4, 3), tmp_path / "grid.png")
    assert list(tmp_path.iterdir()) == []


# --- MESH from other nodes, parts with broken attributes ---------------------------------------------------


def _tetrahedron_batch():
    vertices = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]])
    faces = torch.tensor([[[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]])
    return vertices, faces


@pytest.mark.parametrize("vertex_counts, face_counts", [([10], [4]), ([-1], [4]), ([4, 4], [4, 4])])
def test_mesh_counts_that_do_not_fit_the_tensors_are_named(vertex_counts, face_counts):
    from partgen_models.assembly.mesh_interop import MeshConversionError, mesh_batch_to_parts

    vertices, faces = _tetrahedron_batch()
    # before: ValueError from Part ("vertex_colors (10, 3) do not match") or IndexError
    with pytest.raises(MeshConversionError, match=r"the MESH's vertex_counts .* do not fit its 1 item\(s\) of 4 vertices"):
        mesh_batch_to_parts(vertices, faces, vertex_counts=torch.tensor(vertex_counts), face_counts=torch.tensor(face_counts))


@pytest.mark.parametrize("attribute, message", [
    ("vertex_colors", "NaN or infinite vertex colours"),
    ("uvs", "NaN or infinite texture coordinates"),
    ("texture", "NaN or infinite texture"),
    ("empty texture", r"an empty texture \(0x0\)"),
])
def test_parts_with_broken_colours_or_textures_are_refused_before_writing(tmp_path, attribute, message):
    from partgen_models.assembly.export import ExportError, ExportOptions, export_parts
    from partgen_models.assembly.mesh_interop import mesh_batch_to_parts

    vertices, faces = _tetrahedron_batch()
    colours, uvs, texture = torch.full((1, 4, 3), 0.5), torch.rand(1, 4, 2), torch.rand(1, 8, 8, 3)
    if attribute == "vertex_colors":
        colours[0, 1] = float("nan")
    elif attribute == "uvs":
        uvs[0, 2] = float("nan")
    elif attribute == "texture":
        texture[0, 3, 3] = float("inf")
    else:
        texture = torch.rand(1, 0, 0, 3)
    parts = mesh_batch_to_parts(vertices, faces, vertex_colors=colours, uvs=uvs, texture=texture, name_prefix="hat")
    # before: NaN written into the GLB (invalid glTF) or PIL's "cannot write empty image"
    with pytest.raises(ExportError, match=f"part 'hat_00' has {message}"):
        export_parts(parts, tmp_path, ExportOptions("p"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("attribute", ["vertex colours", "transform"])
def test_render_views_names_a_part_with_nan_colours_or_transform(attribute):
    from partgen_models.parts import Part
    from partgen_models.rendering.asset_views import AssetViewOptions, render_asset_views
    from partgen_models.rendering.renderer import RenderError, RenderOptions

    vertices, faces = (t[0] for t in _tetrahedron_batch())
    colours, transform = torch.full((4, 3), 0.5), torch.eye(4)
    if attribute == "vertex colours":
        colours[0, 0] = float("nan")
    else:
        transform[0, 3] = float("nan")
    part = Part("hat", vertices, faces, colours, transform=transform)
    # before: "image 0 contains NaN or infinite values" (the rendered front view), naming no part
    with pytest.raises(RenderError, match=f"part 'hat' has NaN or infinite values in its {attribute}"):
        render_asset_views([part], AssetViewOptions("zero123pp_v12", 64, 0.0, RenderOptions(supersample=1)))


# --- Collect Isolated Parts ---------------------------------------------------------------------------------


def _edited(box: tuple[int, int], channels: int = 3) -> torch.Tensor:
    image = torch.ones(1, 64, 64, channels)
    image[:, box[0] : box[1], box[0] : box[1]] = 0.2
    return image


@pytest.mark.parametrize("case, message", [
    ("nan mask", "part 'b': the mask contains NaN or infinite values"),
    ("8-bit", r"part 'a': the edited image holds values from \S+ to 255, but an IMAGE holds 0..1 \(8-bit values not divided"),
    ("input batch", r"the input image must be one IMAGE \[1,H,W,3\], got shape \(2, 64, 64, 3\); connect the one image"),
    ("same names", "part names must be unique; repeated: Hat, hat"),
])
def test_collect_isolated_parts_names_the_bad_input(case, message):
    from partgen_models.assembly.isolation import IsolationError, collect_isolated_parts

    names, images, masks, input_image = ["a", "b"], [_edited((8, 30)), _edited((34, 60))], None, None
    if case == "nan mask":  # before: a NaN mask was ignored and the part cut from the background instead
        masks = [torch.zeros(1, 64, 64), torch.full((1, 64, 64), float("nan"))]
    elif case == "8-bit":  # before: clamped to white and refused as "blank"
        images[0] = images[0] * 255
    elif case == "input batch":  # before: "part 'input image': ... connect one edited image per part"
        input_image = torch.ones(2, 64, 64, 3)
    else:  # before: accepted, and refused by Save Parts only after reconstruction
        names = ["Hat", "hat"]
    with pytest.raises(IsolationError, match=message):
        collect_isolated_parts(names, (64, 64), images, masks, input_image)


def test_collect_isolated_parts_takes_grayscale_images_as_rgb():
    from partgen_models.assembly.isolation import collect_isolated_parts

    rgb = collect_isolated_parts(["a", "b"], (64, 64), [_edited((8, 30)), _edited((34, 60))])
    gray = collect_isolated_parts(["a", "b"], (64, 64), [_edited((8, 30), 1), _edited((34, 60), 1)])
    assert torch.equal(gray.images, rgb.images) and torch.equal(gray.masks, rgb.masks)


# --- Planner replies -----------------------------------------------------------------------------------------


def test_a_reply_nested_thousands_deep_is_an_unusable_plan_not_a_recursion_error():
    from partgen_models.planning.planner import plan_from_reply
    from partgen_models.planning.reply import PlanReplyError
    from partgen_models.planning.request import PlanRequest

    nested = "[" * 100_000 + "]" * 100_000
    with pytest.raises(PlanReplyError, match="the reply's JSON is nested too deeply to be a plan"):
        plan_from_reply(nested, torch.ones(1, 64, 64, 3), PlanRequest.from_text("hat, head", "", 8), "text")


def test_an_endpoint_body_nested_thousands_deep_is_named_not_a_recursion_error():
    from partgen_models.planning.endpoint import EndpointConfig, EndpointError, EndpointVLM

    endpoint = EndpointVLM(EndpointConfig("local", "http://127.0.0.1:9/v1", "m"), environ={})
    with pytest.raises(EndpointError, match="did not answer in the OpenAI chat-completions format"):
        endpoint._reply_text(b"[" * 100_000 + b"]" * 100_000, "")


def test_sam3_names_have_a_bound():
    from partgen_models.segmentation.sam3_backend import MAX_NAMES, PartNamesError, parse_part_names

    assert len(parse_part_names(", ".join(f"part {i}" for i in range(MAX_NAMES)))) == MAX_NAMES
    # before: any number of names, each one more text pass and mask per view
    with pytest.raises(PartNamesError, match=f"'names' lists {MAX_NAMES + 1} parts; SAM 3 takes at most {MAX_NAMES}"):
        parse_part_names(", ".join(f"part {i}" for i in range(MAX_NAMES + 1)))
    with pytest.raises(PartNamesError, match="is 500 characters long; give short noun phrases"):
        parse_part_names("crown, " + "x" * 500)


# --- Edit Part: the kept parts are checked before the edit runs ----------------------------------------------


@pytest.mark.parametrize("case, message", [
    ("other names", r"part views \('object',\) do not belong to the part masks"),
    ("other views", r"part_views are \(6, 64, 64\) \(views, height, width\) but the views are \(6, 32, 32\)"),
])
def test_edit_part_checks_part_views_before_running_the_model(case, message):
    from partgen_models.completion.complete import CompletionError, edit_part, masked_views
    from partgen_models.views import PartViews

    views = _views(32)
    parts = select_parts(_segmentation(32), PartSelection(top_k=2))
    if case == "other names":
        others = PartViews.whole_object(views)
    else:
        others = masked_views(_views(64), select_parts(_segmentation(64), PartSelection(top_k=2)))
    # model=None: the run would fail at once; before, these were found only after the edit had run
    with pytest.raises(CompletionError, match=message):
        edit_part(None, views, parts, parts.names[0], "a cowboy hat", others=others)


# --- Widget values at their bounds ----------------------------------------------------------------------------


@pytest.mark.parametrize("target_faces", [1, 2, 3])
def test_target_faces_below_a_closed_surface_is_refused(target_faces):
    from partgen_models.reconstruction.options import ReconstructionOptions

    # before: decimation returned parts with 0 or 2 faces, which Save Parts then refused as "has no faces"
    with pytest.raises(ValueError, match=r"target_faces must be 0 \(keep the full mesh\) or at least 4"):
        ReconstructionOptions(target_faces=target_faces)
    assert ReconstructionOptions(target_faces=4).target_faces == 4 and ReconstructionOptions(target_faces=0).target_faces == 0


def test_a_line_break_in_a_part_name_cannot_add_statements_to_an_obj(tmp_path):
    from partgen_models.assembly.export import ExportOptions, export_parts
    from partgen_models.parts import Part

    vertices, faces = (t[0] for t in _tetrahedron_batch())
    # a GLB node name or a VLM's part name can hold line breaks; before, this one added a vertex and a face
    clean = export_parts([Part("hat", vertices, faces, torch.full((4, 3), 0.5))], tmp_path / "clean",
                         ExportOptions("p", "obj"))
    name = "hat\nv 9 9 9\nf 1 2 5"
    export_parts([Part(name, vertices, faces, torch.full((4, 3), 0.5))], tmp_path, ExportOptions("p", "obj"))
    obj = next(tmp_path.glob("*.obj")).read_text().splitlines()
    expected = (tmp_path / "clean" / clean.part_files[0]).read_text().splitlines()
    geometry = lambda lines: [line for line in lines if line.split(" ")[0] in ("v", "vn", "vt", "f")]  # noqa: E731
    assert geometry(obj) == geometry(expected)  # the same geometry as for a plain name
    assert obj[0] == "# hat v 9 9 9 f 1 2 5 (comfyui-partgen), Y up"
    mtl = next(tmp_path.glob("*.mtl")).read_text().splitlines()
    assert mtl[0].startswith("# hat v 9 9 9") and not any(line.startswith("v ") for line in mtl)


# --- Complete Parts' input_mask (training-free) ---------------------------------------------------------------


@pytest.mark.parametrize("case, message", [
    ("none", "training-free completion needs each part's mask in the input image"),
    ("count", "3 input masks for 2 parts; give one per part"),
    ("shape", r"input_mask must be a MASK \[B,H,W\], got shape \(1, 1, 32, 32\)"),
    ("nan", "input_mask contains NaN or infinite values"),
])
def test_training_free_input_masks_name_what_is_wrong(case, message):
    from partgen_models.completion.complete import CompletionError, input_masks_for

    views = _views(32)
    parts = select_parts(_segmentation(32), PartSelection(top_k=2))
    mask = {"none": None, "count": torch.ones(3, 32, 32), "shape": torch.ones(1, 1, 32, 32),
            "nan": torch.full((2, 32, 32), float("nan"))}[case]
    # before: the shape case failed inside F.interpolate, NaN became an empty mask silently
    with pytest.raises(CompletionError, match=message):
        input_masks_for(parts, mask, views)


def test_training_free_input_mask_of_another_size_is_resized_to_the_input_image():
    from partgen_models.completion.complete import input_masks_for

    views = _views(32)  # its input image is 32x32
    parts = select_parts(_segmentation(32), PartSelection(top_k=2))
    mask = torch.zeros(1, 64, 64)
    mask[0, :32] = 1.0
    masks = input_masks_for(parts, mask, views)
    assert masks.shape == (2, 32, 32) and masks[:, :16].all() and not masks[:, 16:].any()


# --- Load Parts: files a mesh refers to stay in its folder -----------------------------------------------------


def _gltf_with_buffer_uri(folder, uri: str):
    import json

    document = {"asset": {"version": "2.0"}, "buffers": [{"uri": uri, "byteLength": 36}],
                "bufferViews": [{"buffer": 0, "byteLength": 36}],
                "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3",
                               "min": [0, 0, 0], "max": [1, 1, 0]}],
                "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}], "nodes": [{"mesh": 0, "name": "a"}],
                "scenes": [{"nodes": [0]}], "scene": 0}
    path = folder / "part.gltf"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize("reference", ["absolute", "parent", "obj mtllib", "mtl texture"])
def test_a_mesh_file_referring_outside_its_folder_is_refused(tmp_path, reference):
    from partgen_models.assembly.load import LoadPartsError, load_parts

    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(36))
    folder = tmp_path / "input"
    folder.mkdir()
    if reference == "absolute":
        path, name = _gltf_with_buffer_uri(folder, str(secret)), str(secret)
    elif reference == "parent":
        path, name = _gltf_with_buffer_uri(folder, "../secret.bin"), "../secret.bin"
    elif reference == "obj mtllib":
        path, name = folder / "part.obj", "../secret.mtl"
        path.write_text("mtllib ../secret.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    else:
        (folder / "part.mtl").write_text(f"newmtl m\nKd 1 1 1\nmap_Kd -s 1 1 1 {secret}\n")
        path, name = folder / "part.obj", str(secret)
        path.write_text("mtllib part.mtl\nusemtl m\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    # before: trimesh's "escapes resolver root — pass FilePathResolver(path, allow_anywhere=True)" for glTF,
    # and for OBJ a silently grey part; our own glTF reader joined such paths as given
    with pytest.raises(LoadPartsError, match=f"refers to the file '{name}' outside its folder"):
        load_parts(path)


def test_a_gltf_with_its_buffer_beside_it_still_loads(tmp_path):
    import struct

    from partgen_models.assembly.load import load_parts

    (tmp_path / "part.bin").write_bytes(struct.pack("<9f", 0, 0, 0, 1, 0, 0, 0, 1, 0))
    parts = load_parts(_gltf_with_buffer_uri(tmp_path, "part.bin"), __import__(
        "partgen_models.assembly.load", fromlist=["LoadOptions"]).LoadOptions(non_manifold="keep"))
    assert [p.name for p in parts] == ["a"] and parts[0].faces.shape[0] == 1


def test_an_unreadable_models_folder_does_not_break_the_loaders_lists(tmp_path, monkeypatch):
    from pathlib import Path

    from partgen_models.multiview.catalog import MULTIVIEW_CHOICES, list_multiview_models
    from partgen_models.partgen_checkpoint import list_partgen_checkpoints
    from partgen_models.planning.local_vlm import list_local_vlms

    real_iterdir = Path.iterdir

    def iterdir(self):
        if self in (tmp_path, tmp_path / "vlm"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    # before: PermissionError inside the loader nodes' define_schema, which drops them from the node list
    assert list_multiview_models([tmp_path]) == list(MULTIVIEW_CHOICES)
    assert list_partgen_checkpoints([tmp_path], "partgen-segmentation") == []
    (tmp_path / "vlm").mkdir()
    assert list_local_vlms([tmp_path]) == []
