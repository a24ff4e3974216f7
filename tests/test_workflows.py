"""The shipped workflows: UI files, their API twins, the UI → API converter, and ComfyUI's template browser.

Tier 1 (no ComfyUI): the converter on hand-written node definitions (ComfyUI's own default graph,
reroutes, primitives, bypassed and muted nodes), the Mermaid drawing, and the UI files' own
consistency (links agree with the nodes' slots, notes, a twin for each file and a file for each twin).
Tier 3 (a real ComfyUI 0.3.75 server): every UI file converts, with the server's ``/object_info``, to
exactly its committed twin, and the server lists and serves the UI files as workflow templates. The
twins themselves run in tier 2 (``test_tier2_executor.py``).
"""

from __future__ import annotations

import copy
import json
import urllib.parse
from pathlib import Path

import pytest

import comfyui_harness as harness
from partgen_tools.workflow_format import (
    API_SUFFIX,
    FRONTEND_ONLY_TYPES,
    WorkflowFormatError,
    EXAMPLE_FOLDER,
    api_twin_path,
    complete_widget_values,
    template_file_name,
    host_can_run,
    mermaid,
    replace_block,
    required_host,
    sync,
    ui_to_api,
    ui_workflow_files,
    widget_slots,
)

WORKFLOWS_DIR = harness.REPO_ROOT / EXAMPLE_FOLDER
UI_FILES = ui_workflow_files(WORKFLOWS_DIR)
SYNC_HINT = "run `python tools/sync_workflows.py` to regenerate example_workflows/api/ and the README"


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------
# Tier 1: the converter on hand-written definitions (trimmed /object_info entries of ComfyUI 0.3.75)

CORE_INFO = {
    "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["sd15.safetensors"], {}]}},
                               "input_order": {"required": ["ckpt_name"]}, "display_name": "Load Checkpoint"},
    "CLIPTextEncode": {"input": {"required": {"text": ["STRING", {"multiline": True}], "clip": ["CLIP", {}]}},
                       "input_order": {"required": ["text", "clip"]}, "display_name": "CLIP Text Encode (Prompt)"},
    "EmptyLatentImage": {"input": {"required": {"width": ["INT", {"default": 512}], "height": ["INT", {"default": 512}],
                                                "batch_size": ["INT", {"default": 1}]}},
                         "input_order": {"required": ["width", "height", "batch_size"]}, "display_name": "Empty Latent Image"},
    "KSampler": {"input": {"required": {
        "model": ["MODEL", {}], "seed": ["INT", {"control_after_generate": True}], "steps": ["INT", {}],
        "cfg": ["FLOAT", {}], "sampler_name": [["euler", "dpmpp_2m"], {}], "scheduler": [["normal", "karras"], {}],
        "positive": ["CONDITIONING", {}], "negative": ["CONDITIONING", {}], "latent_image": ["LATENT", {}],
        "denoise": ["FLOAT", {}]}},
        "input_order": {"required": ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive",
                                     "negative", "latent_image", "denoise"]}, "display_name": "KSampler"},
    "VAEDecode": {"input": {"required": {"samples": ["LATENT", {}], "vae": ["VAE", {}]}},
                  "input_order": {"required": ["samples", "vae"]}, "display_name": "VAE Decode"},
    "SaveImage": {"input": {"required": {"images": ["IMAGE", {}], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}},
                  "input_order": {"required": ["images", "filename_prefix"]}, "display_name": "Save Image"},
    "LoadImageMask": {"input": {"required": {"image": [["a.png"], {"image_upload": True}],
                                             "channel": [["alpha", "red"], {}]}},
                      "input_order": {"required": ["image", "channel"]}, "display_name": "Load Image (as Mask)"},
    "ImageInvert": {"input": {"required": {"image": ["IMAGE", {}]}}, "display_name": "Invert Image"},
    "PartGenThing": {"input": {"required": {"views": ["PARTGEN_VIEWS", {}], "mode": ["COMBO", {"options": ["a", "b"]}],
                                            "count": ["INT", {"forceInput": True}]},
                               "optional": {"seed": ["INT", {"control_after_generate": True}], "note": ["STRING", {}]}},
                     "input_order": {"required": ["views", "mode", "count"], "optional": ["seed", "note"]},
                     "display_name": "PartGen Thing"},
}


def _node(node_id, kind, widgets, inputs=(), outputs=(), **extra):
    return {"id": node_id, "type": kind, "pos": [0, 0], "size": [300, 100], "flags": {}, "order": 0, "mode": 0,
            "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs], "properties": {},
            "widgets_values": list(widgets), **extra}


def _default_graph() -> dict:
    """ComfyUI's default text-to-image graph as the editor saves it (node ids, widget values and link
    layout of the frontend's default workflow), plus a note."""
    nodes = [
        _node(4, "CheckpointLoaderSimple", ["sd15.safetensors"],
              outputs=[{"name": "MODEL", "type": "MODEL", "links": [1]}, {"name": "CLIP", "type": "CLIP", "links": [3, 5]},
                       {"name": "VAE", "type": "VAE", "links": [8]}]),
        _node(6, "CLIPTextEncode", ["beautiful scenery nature glass bottle landscape, , purple galaxy bottle,"],
              inputs=[{"name": "clip", "type": "CLIP", "link": 3}], outputs=[{"name": "CONDITIONING", "links": [4]}]),
        _node(7, "CLIPTextEncode", ["text, watermark"],
              inputs=[{"name": "clip", "type": "CLIP", "link": 5}], outputs=[{"name": "CONDITIONING", "links": [6]}]),
        _node(5, "EmptyLatentImage", [512, 512, 1], outputs=[{"name": "LATENT", "links": [2]}]),
        _node(3, "KSampler", [156680208700286, "randomize", 20, 8, "euler", "normal", 1],
              inputs=[{"name": "model", "type": "MODEL", "link": 1}, {"name": "positive", "type": "CONDITIONING", "link": 4},
                      {"name": "negative", "type": "CONDITIONING", "link": 6},
                      {"name": "latent_image", "type": "LATENT", "link": 2}],
              outputs=[{"name": "LATENT", "links": [7]}]),
        _node(8, "VAEDecode", [], inputs=[{"name": "samples", "type": "LATENT", "link": 7},
                                          {"name": "vae", "type": "VAE", "link": 8}],
              outputs=[{"name": "IMAGE", "links": [9]}]),
        _node(9, "SaveImage", ["ComfyUI"], inputs=[{"name": "images", "type": "IMAGE", "link": 9}]),
        _node(10, "MarkdownNote", ["Notes are for people, not for the server."], title="Read me"),
    ]
    links = [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 3, "LATENT"], [3, 4, 1, 6, 0, "CLIP"], [4, 6, 0, 3, 1, "CONDITIONING"],
             [5, 4, 1, 7, 0, "CLIP"], [6, 7, 0, 3, 2, "CONDITIONING"], [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 8, 1, "VAE"],
             [9, 8, 0, 9, 0, "IMAGE"]]
    return {"last_node_id": 10, "last_link_id": 9, "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {}, "version": 0.4}


DEFAULT_GRAPH_API = {
    "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": 156680208700286, "steps": 20, "cfg": 8,
                                               "sampler_name": "euler", "scheduler": "normal", "positive": ["6", 0],
                                               "negative": ["7", 0], "latent_image": ["5", 0], "denoise": 1},
          "_meta": {"title": "KSampler"}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"},
          "_meta": {"title": "Load Checkpoint"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1},
          "_meta": {"title": "Empty Latent Image"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,",
                                                     "clip": ["4", 1]}, "_meta": {"title": "CLIP Text Encode (Prompt)"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]},
          "_meta": {"title": "CLIP Text Encode (Prompt)"}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}, "_meta": {"title": "VAE Decode"}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ComfyUI"},
          "_meta": {"title": "Save Image"}},
}


def test_default_graph_converts_as_the_editor_exports_it():
    """The seed's "control after generate" value and the note are not sent; links become [id, slot]."""
    assert ui_to_api(_default_graph(), CORE_INFO) == DEFAULT_GRAPH_API


def test_widget_slots_follow_the_editor():
    assert widget_slots(CORE_INFO["KSampler"]) == ["seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"]
    # an upload button follows the required widgets; forceInput makes a socket; optional widgets come last
    assert widget_slots(CORE_INFO["LoadImageMask"]) == ["image", "channel", None]
    assert widget_slots(CORE_INFO["PartGenThing"]) == ["mode", "seed", None, "note"]


def test_reroutes_primitives_bypass_mute_and_linked_widgets():
    graph = _default_graph()
    nodes = {n["id"]: n for n in graph["nodes"]}
    # the positive prompt's CLIP through a reroute
    graph["nodes"].append(_node(20, "Reroute", [], inputs=[{"name": "", "type": "*", "link": 3}],
                                outputs=[{"name": "", "type": "CLIP", "links": [20]}]))
    graph["links"] = [link for link in graph["links"] if link[0] != 3] + [[3, 4, 1, 20, 0, "CLIP"], [20, 20, 0, 6, 0, "CLIP"]]
    nodes[6]["inputs"][0]["link"] = 20
    # steps from a primitive (its value is already the widget's), cfg turned into a socket fed by nothing
    graph["nodes"].append(_node(21, "PrimitiveNode", [20, "fixed"], outputs=[{"name": "INT", "type": "INT", "links": [21]}]))
    graph["links"].append([21, 21, 0, 3, 4, "INT"])
    nodes[3]["inputs"] += [{"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 21},
                           {"name": "cfg", "type": "FLOAT", "widget": {"name": "cfg"}, "link": None}]
    # a bypassed image inverter between VAE Decode and Save Image, and a muted second Save Image
    graph["nodes"].append(_node(22, "ImageInvert", [], mode=4, inputs=[{"name": "image", "type": "IMAGE", "link": 9}],
                                outputs=[{"name": "IMAGE", "type": "IMAGE", "links": [22]}]))
    graph["links"] = [link for link in graph["links"] if link[0] != 9] + [[9, 8, 0, 22, 0, "IMAGE"], [22, 22, 0, 9, 0, "IMAGE"]]
    nodes[9]["inputs"][0]["link"] = 22
    graph["nodes"].append(_node(23, "SaveImage", ["muted"], mode=2, inputs=[{"name": "images", "type": "IMAGE", "link": 23}]))
    graph["links"].append([23, 8, 0, 23, 0, "IMAGE"])
    assert ui_to_api(graph, CORE_INFO) == DEFAULT_GRAPH_API


def test_a_widget_fed_by_a_node_takes_the_link():
    graph = _default_graph()
    graph["nodes"].append(_node(30, "EmptyLatentImage", [64, 64, 1], outputs=[{"name": "LATENT", "links": []}]))
    graph["nodes"].append(_node(31, "PartGenThing", ["b", 7, "fixed", "hello"],
                                inputs=[{"name": "views", "type": "PARTGEN_VIEWS", "link": None},
                                        {"name": "count", "type": "INT", "link": 40}]))
    graph["links"].append([40, 5, 0, 31, 1, "INT"])
    converted = ui_to_api(graph, CORE_INFO)["31"]
    assert converted == {"class_type": "PartGenThing", "inputs": {"mode": "b", "count": ["5", 0], "seed": 7, "note": "hello"},
                         "_meta": {"title": "PartGen Thing"}}


def test_extra_trailing_widget_values_are_ignored():
    """Frontend extensions append widgets of their own (Preview3D's viewer, SaveGLB's)."""
    graph = _default_graph()
    next(n for n in graph["nodes"] if n["id"] == 9)["widgets_values"] = ["ComfyUI", ""]
    assert ui_to_api(graph, CORE_INFO) == DEFAULT_GRAPH_API


def test_widgets_added_after_saving_take_their_defaults():
    """A node that gained (trailing) inputs since the file was saved: the editor keeps them at their
    defaults, and so do the conversion and complete_widget_values (what tools/sync_workflows.py writes)."""
    graph = _default_graph()
    info = copy.deepcopy(CORE_INFO)
    info["KSampler"]["input"]["required"]["denoise"][1]["default"] = 0.75
    info["KSampler"]["input"]["required"]["sharpen"] = ["BOOLEAN", {"default": True}]
    info["KSampler"]["input_order"]["required"].append("sharpen")
    next(n for n in graph["nodes"] if n["id"] == 3)["widgets_values"] = [1, "fixed", 20]
    inputs = ui_to_api(graph, info)["3"]["inputs"]
    assert {k: v for k, v in inputs.items() if not isinstance(v, list)} == {
        "seed": 1, "steps": 20, "cfg": 0.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.75, "sharpen": True}
    completed = complete_widget_values(graph, info)
    assert next(n for n in completed["nodes"] if n["id"] == 3)["widgets_values"] == [1, "fixed", 20, 0.0, "euler", "normal",
                                                                                       0.75, True]
    assert ui_to_api(completed, info) == ui_to_api(graph, info)
    mask = {"id": 1, "type": "LoadImageMask", "widgets_values": []}
    assert complete_widget_values({"nodes": [mask]}, info)["nodes"][0]["widgets_values"] == ["a.png", "alpha", "image"]


# ComfyUI 0.30's core Generate Text, trimmed: a V3 dynamic combo whose "on" option brings its own widgets.
TEXT_GENERATE_030 = {"TextGenerate": {
    "input": {"required": {
        "clip": ["CLIP", {}], "prompt": ["STRING", {"default": "", "multiline": True}],
        "max_length": ["INT", {"default": 512}],
        "sampling_mode": ["COMFY_DYNAMICCOMBO_V3", {"options": [
            {"key": "on", "inputs": {"required": {"temperature": ["FLOAT", {"default": 0.7}],
                                                  "seed": ["INT", {"default": 0}]},
                                     "optional": {"presence_penalty": ["FLOAT", {"default": 0.0}]}}},
            {"key": "off", "inputs": {"required": {}}}]}]},
        "optional": {"image": ["IMAGE", {}], "thinking": ["BOOLEAN", {"default": False}],
                     "use_default_template": ["BOOLEAN", {"default": True}]}},
    "input_order": {"required": ["clip", "prompt", "max_length", "sampling_mode"],
                    "optional": ["image", "thinking", "use_default_template"]},
    "display_name": "Generate Text"}}


def _text_generate_graph(widgets: list) -> dict:
    node = _node(1, "TextGenerate", widgets, inputs=[{"name": "clip", "type": "CLIP", "link": None}])
    return {"nodes": [node], "links": [], "version": 0.4}


def test_dynamic_combo_brings_the_widgets_of_its_option():
    """0.30's editor saves a dynamic combo's key followed by its chosen option's widgets; the server takes
    those as ``combo.child`` inputs (comfy_api ``finalize_prefix``)."""
    off = ui_to_api(_text_generate_graph(["", 2048, "off", False, True]), TEXT_GENERATE_030)["1"]["inputs"]
    assert off == {"prompt": "", "max_length": 2048, "sampling_mode": "off", "thinking": False,
                   "use_default_template": True}
    on = ui_to_api(_text_generate_graph(["p", 64, "on", 0.2, 5, 0.1, True, False]), TEXT_GENERATE_030)["1"]["inputs"]
    assert on == {"prompt": "p", "max_length": 64, "sampling_mode": "on", "sampling_mode.temperature": 0.2,
                  "sampling_mode.seed": 5, "sampling_mode.presence_penalty": 0.1, "thinking": True,
                  "use_default_template": False}
    # saved before the combo existed: the first option and its defaults, as the editor fills them
    completed = complete_widget_values(_text_generate_graph(["p", 64]), TEXT_GENERATE_030)
    assert completed["nodes"][0]["widgets_values"] == ["p", 64, "on", 0.7, 0, 0.0, False, True]


def test_a_workflow_names_the_oldest_host_it_needs():
    graph = _text_generate_graph(["", 2048, "off"])
    assert required_host(graph) is None and host_can_run(graph, "0.3.75")
    graph["extra"] = {"partgen": {"min_comfyui": "0.30.0"}}
    assert required_host(graph) == "0.30.0"
    assert not host_can_run(graph, "0.3.75") and host_can_run(graph, "0.30.0") and host_can_run(graph, "0.31.2")
    assert host_can_run(graph, "custom")  # a checkout of unknown version is taken to be new enough
    graph["extra"]["partgen"]["min_comfyui"] = "latest"
    with pytest.raises(WorkflowFormatError, match="'latest' is not a ComfyUI version like '0.30.0'"):
        required_host(graph)


def test_sync_refuses_a_newer_host_workflow_without_that_hosts_definitions(tmp_path):
    (tmp_path / EXAMPLE_FOLDER).mkdir()
    graph = _text_generate_graph(["", 2048, "off"])
    graph["extra"] = {"partgen": {"min_comfyui": "0.30.0"}}
    (tmp_path / EXAMPLE_FOLDER / "planner.json").write_text(json.dumps(graph))
    (tmp_path / "README.md").write_text("")
    with pytest.raises(WorkflowFormatError, match=r"planner.json needs ComfyUI 0.30.0 \(extra.partgen.min_comfyui\)"):
        sync(tmp_path, CORE_INFO, check=True)
    with pytest.raises(WorkflowFormatError, match="this ComfyUI has no node 'TextGenerate'"):
        ui_to_api(graph, CORE_INFO)  # what converting it with the oldest host's definitions would do


def test_textgenerate_planner_workflow_gives_parse_plan_what_plan_prompt_asked():
    """Parse Plan checks the reply against its own parts settings: in the shipped TextGenerate variant they
    must be Plan Prompt's, and the generated text must reach Parse Plan."""
    ui_file = harness.ui_file_of_twin("image_to_parts_mmpart_textgenerate_api.json")
    assert required_host(_load(ui_file)) == "0.30.0"
    twin = _load(api_twin_path(ui_file))
    (prompt_id,) = harness.nodes_of_class(twin, "PartGenPlanPrompt")
    (generate_id,) = harness.nodes_of_class(twin, "TextGenerate")
    (parse_id,) = harness.nodes_of_class(twin, "PartGenParsePlan")
    asked, parse = twin[prompt_id]["inputs"], twin[parse_id]["inputs"]
    assert {k: asked[k] for k in ("parts", "wishes", "max_parts")} == {k: parse[k] for k in ("parts", "wishes", "max_parts")}
    assert twin[generate_id]["inputs"]["prompt"] == [prompt_id, 0] and parse["reply"] == [generate_id, 0]
    assert twin[generate_id]["inputs"]["sampling_mode"] == "off"  # deterministic, as the notes advise
    assert twin[generate_id]["inputs"]["image"] == parse["image"] == asked["image"]
    assert not harness.nodes_of_class(twin, "PartGenPlanParts") and not harness.nodes_of_class(twin, "PartGenLoadVLM")
    mmpart = _load(harness.ui_file_of_twin("image_to_parts_mmpart_api.json"))  # the muted alternative moved out of it
    assert not [n["id"] for n in mmpart["nodes"] if n.get("mode") in (2, 4)]


@pytest.mark.parametrize("mutate, message", [
    (lambda g: g["nodes"][6].update(type="SaveAnimatedWEBP", title="Save clip"),
     "node 9 (SaveAnimatedWEBP, 'Save clip'): this ComfyUI has no node 'SaveAnimatedWEBP' (a missing custom node pack?)"),
    (lambda g: g["links"].pop(),
     "node 9 (SaveImage): link 9 is not in the workflow's 'links'"),
    (lambda g: g.update(definitions={"subgraphs": [{"id": "x"}]}),
     "workflows with subgraphs are not supported; unpack the subgraphs in the editor first"),
    (lambda g: g.pop("nodes"),
     "not a UI-format workflow: it has no 'nodes' list (an API-format file needs no conversion)"),
])
def test_conversion_errors_name_the_node(mutate, message):
    graph = _default_graph()
    mutate(graph)
    with pytest.raises(WorkflowFormatError) as err:
        ui_to_api(graph, CORE_INFO)
    assert str(err.value) == message


def test_mermaid_draws_the_server_side_graph():
    graph = _default_graph()
    graph["groups"] = [{"id": 1, "title": "Step 1 - Load model", "bounding": [-10, -10, 100, 100]}]
    next(n for n in graph["nodes"] if n["id"] == 4)["pos"] = [0, 0]
    for node in graph["nodes"]:
        if node["id"] != 4:
            node["pos"] = [500, 500]
    next(n for n in graph["nodes"] if n["id"] == 7)["title"] = 'Negative "prompt"'
    assert mermaid(graph, CORE_INFO) == "\n".join([
        "flowchart LR",
        '  subgraph g1["Step 1 - Load model"]',
        '    n4["Load Checkpoint"]',
        "  end",
        '  n3["KSampler"]',
        '  n5["Empty Latent Image"]',
        '  n6["CLIP Text Encode (Prompt)"]',
        '  n7["Negative #quot;prompt#quot;"]',
        '  n8["VAE Decode"]',
        '  n9["Save Image"]',
        "  n4 -->|MODEL| n3",
        "  n6 -->|CONDITIONING| n3",
        "  n7 -->|CONDITIONING| n3",
        "  n5 -->|LATENT| n3",
        "  n4 -->|CLIP| n6",
        "  n4 -->|CLIP| n7",
        "  n3 -->|LATENT| n8",
        "  n4 -->|VAE| n8",
        "  n8 -->|IMAGE| n9",
    ]) + "\n"


def test_readme_blocks_need_their_markers():
    text = "intro\n<!-- BEGIN GENERATED x: python tools/sync_workflows.py rewrites this block; do not edit by hand -->\n" \
           "old\n<!-- END GENERATED x -->\noutro\n"
    assert replace_block(text, "x", "new") == text.replace("old\n", "\nnew\n\n")
    with pytest.raises(WorkflowFormatError, match="the README has no generated block 'y'"):
        replace_block(text, "y", "new")


# ------------------------------------------------------------------------------------------------
# Tier 1: the shipped UI files


def test_every_ui_file_has_a_twin_and_every_twin_a_ui_file():
    assert {api_twin_path(p).name for p in UI_FILES} >= {
        "image_to_parts_api.json", "text_to_parts_api.json", "mesh_to_parts_api.json", "edit_part_api.json"}
    twins = {p.name for p in (WORKFLOWS_DIR / "api").glob("*.json")}
    assert twins == {api_twin_path(p).name for p in UI_FILES}, SYNC_HINT
    assert len(twins) == len(UI_FILES), "two UI files name the same extra.partgen.api_twin"
    misplaced = sorted(p.name for p in WORKFLOWS_DIR.glob(f"*{API_SUFFIX}"))
    assert not misplaced, (f"{misplaced}: API-format files belong in example_workflows/api/ (ComfyUI's template browser "
                           "lists every example_workflows/*.json and cannot open API-format files)")


def _links_agree(workflow: dict) -> list[str]:
    problems = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for link_id, origin, origin_slot, target, target_slot, kind in workflow["links"]:
        src, dst = nodes[origin], nodes[target]
        if link_id not in (src["outputs"][origin_slot].get("links") or []):
            problems.append(f"link {link_id} missing from node {origin} output {origin_slot}")
        if dst["inputs"][target_slot].get("link") != link_id:
            problems.append(f"link {link_id} is not node {target}'s input {target_slot}")
        if src["outputs"][origin_slot]["type"] != kind:
            problems.append(f"link {link_id} type {kind} != {src['outputs'][origin_slot]['type']}")
    used = {link[0] for link in workflow["links"]}
    for node in workflow["nodes"]:
        for slot in node.get("inputs", []):
            if slot.get("link") is not None and slot["link"] not in used:
                problems.append(f"node {node['id']} input {slot['name']} names missing link {slot['link']}")
    return problems


def test_the_template_browser_shows_each_workflows_own_title():
    """ComfyUI's template browser titles a custom node's template with the file stem only (frontends 1.32.9
    and 1.47.12 look up ``templateWorkflows.template.*`` translations for ComfyUI's own templates, never
    for a pack's), so each UI file and its thumbnail are named after the workflow's title."""
    assert {p.stem for p in UI_FILES} >= {"Image to parts (PartGen)", "Image to parts (MMPart)", "Text to parts",
                                          "Mesh file to parts", "Edit a part"}
    for ui_file in UI_FILES:
        title = _load(ui_file)["extra"]["partgen"]["title"]
        assert ui_file.name == template_file_name(title), f"{ui_file.name} is titled {title!r}: {SYNC_HINT}"
        assert ui_file.with_suffix(".jpg").is_file(), f"{ui_file.stem}.jpg: the template browser's thumbnail"
    assert sorted(p.name for p in WORKFLOWS_DIR.glob("*.jpg")) == sorted(p.with_suffix(".jpg").name for p in UI_FILES)
    assert template_file_name("Image → parts (PartGen)") == "Image to parts (PartGen).json"
    for unusable in ("a/b", "what?", "", "Überblick"):
        with pytest.raises(WorkflowFormatError, match="cannot be a file name on every OS"):
            template_file_name(unusable)


def test_sync_names_a_retitled_workflow_and_its_thumbnail_after_the_title(tmp_path):
    ui_src = next(p for p in UI_FILES if api_twin_path(p).name == "image_to_views_api.json")
    folder = tmp_path / EXAMPLE_FOLDER
    folder.mkdir()
    workflow = _load(ui_src)
    workflow["extra"]["partgen"]["title"] = "Six views → one mesh"
    (folder / ui_src.name).write_text(json.dumps(workflow))
    (folder / ui_src.with_suffix(".jpg").name).write_bytes(b"\xff\xd8\xff")
    (tmp_path / "README.md").write_text("".join(
        f"<!-- BEGIN GENERATED {b}: python tools/sync_workflows.py rewrites this block; do not edit by hand -->\n"
        f"<!-- END GENERATED {b} -->\n" for b in ("status", "workflows", "node-reference")))
    # no node definitions needed for this graph's widgets beyond what the file holds: the twin is not checked here
    info = {n["type"]: {"input": {}, "input_order": {}, "display_name": n["type"]} for n in workflow["nodes"]}
    assert f"{EXAMPLE_FOLDER}/{ui_src.name} -> Six views to one mesh.json" in sync(tmp_path, info, check=True)
    assert (folder / ui_src.name).is_file()  # --check renames nothing
    sync(tmp_path, info)
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == ["Six views to one mesh.jpg",
                                                                       "Six views to one mesh.json"]
    assert (folder / "api" / "image_to_views_api.json").is_file()


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.name)
def test_ui_file_is_a_consistent_editor_workflow(ui_file):
    workflow = _load(ui_file)
    assert workflow["version"] == 0.4
    assert not _links_agree(workflow), _links_agree(workflow)
    ids = [n["id"] for n in workflow["nodes"]]
    assert len(set(ids)) == len(ids) and workflow["last_node_id"] >= max(ids)
    assert workflow["last_link_id"] >= max(link[0] for link in workflow["links"])
    notes = [n for n in workflow["nodes"] if n["type"] == "MarkdownNote"]
    assert notes and all(n["widgets_values"][0].strip() and n.get("title") for n in notes)
    assert "Models" in " ".join(n["title"] for n in notes), "each workflow says which models it downloads"
    assert workflow["extra"]["partgen"]["title"], "extra.partgen.title heads the README walkthrough"
    for node in workflow["nodes"]:  # every node within a few screens of the others, none overlapping a note
        assert all(abs(c) < 10_000 for c in node["pos"]), node["id"]


# ------------------------------------------------------------------------------------------------
# Tier 3: a real server's definitions and template browser


@pytest.fixture(scope="module")
def server(comfyui_path, comfyui_base):
    srv = harness.ComfyUIServer(comfyui_path, comfyui_base).start(timeout_s=180)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def object_info(server) -> dict:
    return server.get_json("/object_info", timeout=60)


def _skip_unless_host_runs(workflow: dict, host, object_info: dict) -> None:
    if not host_can_run(workflow, host.version):
        missing = sorted({n["type"] for n in workflow["nodes"]} - set(object_info) - FRONTEND_ONLY_TYPES)
        pytest.skip(f"ComfyUI {host.version} has no {', '.join(missing) or 'node this workflow needs'} "
                    f"(the workflow needs ComfyUI {required_host(workflow)}, extra.partgen.min_comfyui)")


@pytest.mark.tier3
@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.name)
def test_ui_file_converts_to_its_twin(object_info, ui_file, comfyui_host):
    """The twins are generated against the oldest host's node definitions (tools/sync_workflows.py), a
    workflow with ``min_comfyui`` against that host's; other hosts give core nodes other display names and
    new inputs (CFGNorm's pre_cfg), which their own conversion fills."""
    workflow = _load(ui_file)
    _skip_unless_host_runs(workflow, comfyui_host, object_info)
    expected_host = required_host(workflow) or harness.OLDEST_HOST.version
    if comfyui_host.version != expected_host:
        pytest.skip(f"{api_twin_path(ui_file).name} is generated from ComfyUI {expected_host}'s definitions")
    converted = ui_to_api(workflow, object_info)
    twin = _load(api_twin_path(ui_file))
    assert converted == twin, f"{api_twin_path(ui_file).name} is not the conversion of {ui_file.name}: {SYNC_HINT}"


@pytest.mark.tier3
def test_ui_files_use_known_widget_values(object_info, comfyui_host):
    """Every combo value is one the server offers (file lists aside: tier 2 validates those with files in place)."""
    bad = []
    for ui_file in UI_FILES:
        if not host_can_run(_load(ui_file), comfyui_host.version):
            continue  # its core nodes are newer than this host (min_comfyui); its own host checks it
        for node_id, node in ui_to_api(_load(ui_file), object_info).items():
            spec = {**object_info[node["class_type"]]["input"].get("required", {}),
                    **object_info[node["class_type"]]["input"].get("optional", {})}
            for name, value in node["inputs"].items():
                kind = spec[name][0]
                options = kind if isinstance(kind, list) else (spec[name][1].get("options") if kind == "COMBO" else None)
                if options and not isinstance(value, list) and value not in options and name not in ("ckpt_name", "file", "image"):
                    bad.append(f"{ui_file.name} node {node_id} {name}={value!r} not in {options}")
    assert not bad, bad


@pytest.mark.tier3
def test_template_browser_lists_the_ui_workflows(server):
    """ComfyUI 0.3.75 lists every <pack>/{example_workflows,workflows,...}/*.json (one level deep)."""
    listed = server.get_json("/workflow_templates")
    assert sorted(listed.get(harness.PACK_DIR_NAME, [])) == sorted(p.stem for p in UI_FILES), listed


@pytest.mark.tier3
@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.name)
def test_template_browser_serves_each_workflow(server, ui_file):
    path = f"/api/workflow_templates/{urllib.parse.quote(harness.PACK_DIR_NAME)}/{urllib.parse.quote(ui_file.name)}"
    status, _, body = server.get_bytes(path)
    assert status == 200 and json.loads(body) == _load(ui_file)
    # the browser's thumbnail: <name>.jpg beside the workflow
    status, _, body = server.get_bytes(path[: -len(".json")] + ".jpg")
    assert status == 200 and body[:3] == b"\xff\xd8\xff", ui_file.with_suffix(".jpg").name


@pytest.mark.tier3
def test_example_inputs_of_the_workflows_exist_in_the_test_input_folder(object_info, comfyui_base, comfyui_host):
    """What the workflows load is where the notes tell users to put it (the harness copies the shipped examples)."""
    for ui_file in UI_FILES:
        if not host_can_run(_load(ui_file), comfyui_host.version):
            continue  # converted on the host it needs (min_comfyui)
        for node in ui_to_api(_load(ui_file), object_info).values():
            for name in ("image", "file"):
                value = node["inputs"].get(name)
                if isinstance(value, str) and value != "none":
                    assert (comfyui_base["input"] / value).is_file(), (ui_file.name, value)
