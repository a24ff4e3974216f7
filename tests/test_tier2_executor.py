"""Tier 2: ComfyUI's real executor (``execution.PromptExecutor``), no HTTP server, tiny checkpoints.

Each ComfyUI host (0.3.75, the oldest supported, and 0.30.0, a current one; the host is in every test
id) runs the prompts of this module in a fresh interpreter (``comfyui_harness.run_executor``), which
imports that ComfyUI, builds its ``PromptExecutor`` the way its ``main.py`` does, loads this repository
as a custom-node pack through ``extra_model_paths.yaml`` (``custom_nodes:`` key) exactly like a user
install, validates each prompt with ``execution.validate_prompt`` and executes it. Every prompt has its
own time limit (``JOB_TIMEOUT_S``): one that overruns fails its own test with a message naming the node
it was in, and the remaining prompts run in a fresh interpreter. A subprocess rather than this pytest process because
ComfyUI's top-level modules (``nodes``, ``utils``, ``execution``, ``comfy``...) would clash with this
repo's ``nodes/`` package and with tier-1 stubs, and its CLI args / folder paths are process globals.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

import comfyui_harness as harness

pytestmark = pytest.mark.tier2

MULTIVIEW = "PartGenMultiView"
INTERRUPT_STEPS = 200
FULL_LENGTH = "image_to_views_api.json"  # runs exactly as shipped; the longer graphs run with few steps
# Per prompt. On 2 CPU cores shared with six other test runs (load ~17) edit_part took 705 s and
# image_to_parts 561 s on ComfyUI 0.30.0; $PARTGEN_TIER2_JOB_TIMEOUT_S changes the limit.
JOB_TIMEOUT_S = float(os.environ.get("PARTGEN_TIER2_JOB_TIMEOUT_S", "900"))


def _shortened(name: str, prompt: dict) -> dict:
    """Longer pipelines with every PartGen ``steps`` cut to 3, 2 segmentation samples, at most 2 selected
    parts and reconstruction extracted on a 64 grid (CI time; tier 3 runs the shipped grid); the graph,
    its models and every other setting stay as shipped."""
    if name == FULL_LENGTH:
        return prompt
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        if node["class_type"].startswith("PartGen"):
            inputs = node["inputs"]
            if isinstance(inputs.get("steps"), int):
                inputs["steps"] = min(inputs["steps"], 3)
            if isinstance(inputs.get("samples"), int):
                inputs["samples"] = min(inputs["samples"], 2)
            if node["class_type"] == "PartGenSelectParts" and isinstance(inputs.get("top_k"), int):
                inputs["top_k"] = min(inputs["top_k"], 2)
            if node["class_type"] == "PartGenReconstruct" and isinstance(inputs.get("resolution"), int):
                inputs["resolution"] = 64
    return prompt


WORKFLOWS = {name: _shortened(name, prompt) for name, prompt in harness.load_api_workflows().items()}
# Workflows needing weights tests cannot make (a core text-to-image checkpoint): validated, never run.
VALIDATE_ONLY = harness.load_api_workflows(validate_only=True)


def _first_multiview(prompt: dict) -> str:
    ids = harness.nodes_of_class(prompt, MULTIVIEW)
    assert ids, f"no {MULTIVIEW} node in the prompt"
    return ids[0]


def _base_workflow() -> dict:
    """The image-to-views workflow: the shipped one, else the smallest equivalent graph."""
    if FULL_LENGTH in WORKFLOWS:
        return copy.deepcopy(WORKFLOWS[FULL_LENGTH])
    for prompt in WORKFLOWS.values():
        if harness.nodes_of_class(prompt, MULTIVIEW):
            return copy.deepcopy(prompt)
    pytest.fail("no example_workflows/api/*_api.json contains a PartGenMultiView node")


CHAIR_PARTS = ["backrest", "leg_back_left", "leg_back_right", "leg_front_left", "leg_front_right", "seat"]


def file3d_round_trip_prompt() -> dict:
    """The example chair: Load Parts → Save Parts, whose typed 3D file (0.30+) feeds core Preview3D and a
    second Load Parts → Save Parts: parts leave and re-enter the pack through FILE_3D sockets."""
    return {
        "1": {"class_type": "PartGenLoadParts", "inputs": {"file": "3d/" + harness.EXAMPLE_MESH.name, "non_manifold": "error"}},
        "2": {"class_type": "PartGenSaveParts", "inputs": {"parts": ["1", 0], "filename_prefix": "tier2/file3d_source",
                                                           "part_files": "none", "exploded": 0.0}},
        "3": {"class_type": "Preview3D", "inputs": {"model_file": ["2", 1]}},
        "4": {"class_type": "PartGenLoadParts", "inputs": {"file": "3d/" + harness.EXAMPLE_MESH.name, "non_manifold": "error",
                                                           "model_3d": ["2", 1]}},
        "5": {"class_type": "PartGenSaveParts", "inputs": {"parts": ["4", 0], "filename_prefix": "tier2/file3d_round_trip",
                                                           "part_files": "none", "exploded": 0.0}},
    }


WRONG_FORMAT_MESH = "3d/partgen_box.stl"  # written into the test input folder by the results fixture


def load3d_prompts() -> dict[str, dict]:
    """Core Load 3D (Advanced) → PartGen Load Parts through its ``model_3d`` socket (0.30+): the chair
    becomes parts; an STL, which Load Parts cannot read, is refused with a message naming the input."""
    def graph(model_file: str, prefix: str) -> dict:
        return {
            "1": {"class_type": "Load3DAdvanced", "inputs": {"model_file": model_file, "viewport_state": {},
                                                             "width": 64, "height": 64}},
            "2": {"class_type": "PartGenLoadParts", "inputs": {"file": "3d/" + harness.EXAMPLE_MESH.name,
                                                               "non_manifold": "error", "model_3d": ["1", 0]}},
            "3": {"class_type": "PartGenSaveParts", "inputs": {"parts": ["2", 0], "filename_prefix": prefix,
                                                               "part_files": "none", "exploded": 0.0}},
        }
    return {"load3d_to_parts": graph("3d/" + harness.EXAMPLE_MESH.name, "tier2/load3d_parts"),
            "load3d_wrong_format": graph(WRONG_FORMAT_MESH, "tier2/load3d_wrong")}


def host_has_file3d(comfyui_path: Path) -> bool:
    """Feature-detected as the nodes do (``nodes/host_features.py``), from the host's own source."""
    return "File3DGLB" in (comfyui_path / "comfy_api" / "latest" / "_io.py").read_text()


# Graphs whose nodes image_to_parts also runs (and whose views graph the interrupt and transparent-image
# jobs run on every host): on newer hosts they are left out to keep CI within its time; the oldest host
# runs every shipped workflow.
SUBSET_WORKFLOWS = ("image_to_part_masks_api.json", "image_to_views_api.json")


def _jobs(with_file3d: bool = False, every_workflow: bool = True, host=harness.OLDEST_HOST) -> list[dict]:
    jobs = [{"name": "core_smoke", "prompt": harness.core_smoke_prompt(64, 48, "tier2_smoke")}]
    if with_file3d:
        jobs.append({"name": "file3d_round_trip", "prompt": file3d_round_trip_prompt()})
        jobs += [{"name": name, "prompt": prompt} for name, prompt in load3d_prompts().items()]
    for name, prompt in WORKFLOWS.items():
        if every_workflow or name not in SUBSET_WORKFLOWS:
            jobs.append({"name": name, "prompt": prompt})
    for name, prompt in VALIDATE_ONLY.items():
        if harness.host_runs_twin(host, name):  # a workflow needing a newer host's core nodes is left out
            jobs.append({"name": name, "prompt": prompt, "validate_only": True})
    wf = _base_workflow()
    mv = _first_multiview(wf)

    interrupted = copy.deepcopy(wf)
    interrupted[mv]["inputs"]["steps"] = INTERRUPT_STEPS
    # Interrupt (what POST /interrupt does) right after the node's first progress report; the
    # node's next ProgressBar update must then raise InterruptProcessingException.
    jobs.append({"name": "interrupt", "prompt": interrupted, "interrupt_after_progress": 1})

    empty = copy.deepcopy(wf)
    loaders = harness.nodes_of_class(empty, "LoadImage")
    assert loaders, "the image-to-views workflow should start from LoadImage"
    empty[loaders[0]]["inputs"]["image"] = "partgen_transparent.png"
    empty[mv]["inputs"]["steps"] = 2
    jobs.append({"name": "transparent_image", "prompt": empty})
    return jobs


@pytest.fixture(scope="module")
def results(comfyui_path, comfyui_base, comfyui_host) -> dict[str, dict]:
    import trimesh

    trimesh.creation.box().export(comfyui_base["input"] / WRONG_FORMAT_MESH)
    jobs = _jobs(host_has_file3d(comfyui_path), every_workflow=comfyui_host not in harness.HOSTS[1:], host=comfyui_host)
    out = harness.run_executor(jobs, comfyui_base, root=comfyui_path, timeout_s=JOB_TIMEOUT_S)
    return _Results({r["name"]: r for r in out})


class _Results(dict):
    """Results by job name; a job the harness had to stop (time limit, crash) fails the test that reads it."""

    def __getitem__(self, name: str) -> dict:
        result = super().__getitem__(name)
        if "harness_failure" in result:
            pytest.fail(result["harness_failure"], pytrace=False)
        return result


def _events(result: dict, etype: str) -> list[dict]:
    return [data for event, data in result["messages"] if event == etype]


def _explain(result: dict) -> str:
    errs = _events(result, "execution_error")
    return (f"valid={result['valid']} validation_error={result.get('validation_error')} "
            f"node_errors={result.get('node_errors')} errors={errs} "
            f"events={[e for e, _ in result['messages']]}\nlog: {result.get('log_file')}\n"
            + harness._tail(Path(result["log_file"]), 4000))


def _saved_images(result: dict, node_id: str) -> list[Path]:
    entries = result["history"]["outputs"].get(node_id, {}).get("images", [])
    out_dir = Path(result["output_dir"])
    return [out_dir / e["subfolder"] / e["filename"] for e in entries if e.get("type") == "output"]


def test_executor_runs_core_nodes(results):
    """The harness itself: a core-only EmptyImage -> SaveImage prompt succeeds and writes the PNG."""
    from PIL import Image

    r = results["core_smoke"]
    assert r["valid"] and r["success"], _explain(r)
    files = _saved_images(r, "2")
    assert len(files) == 1 and files[0].is_file(), r["history"]
    assert Image.open(files[0]).size == (64, 48)
    assert [e for e, _ in r["messages"]][0] == "execution_start"
    assert _events(r, "execution_success")


def test_pack_is_loaded_through_extra_model_paths(results, comfyui_base):
    r = results["core_smoke"]
    assert str(comfyui_base["packs"]) in r["custom_node_dirs"], r["custom_node_dirs"]
    assert Path(r["loaded_packs"].get(harness.PACK_DIR_NAME, "")) == comfyui_base["pack"], r["loaded_packs"]
    assert {"PartGenLoadMultiViewModel", MULTIVIEW} <= set(r["pack_nodes"]), _explain(r)


def test_workflows_exist():
    assert WORKFLOWS, "example_workflows/api/ ships no *_api.json (API-format) workflow"


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_shipped_workflow_runs(results, name):
    from PIL import Image

    if name not in results and name in SUBSET_WORKFLOWS:
        pytest.skip("its nodes run in image_to_parts_api.json on this host (CI time)")
    r = results[name]
    prompt = WORKFLOWS[name]
    assert r["valid"], _explain(r)
    assert r["success"], _explain(r)
    assert _events(r, "execution_success"), _explain(r)
    assert not _events(r, "execution_error"), _explain(r)

    save_nodes = harness.nodes_of_class(prompt, "SaveImage")
    for nid in save_nodes:
        files = _saved_images(r, nid)
        assert files, f"SaveImage {nid} produced nothing: {r['history']}"
        for f in files:
            assert f.is_file(), f
            img = Image.open(f)
            img.load()
            src = prompt[nid]["inputs"]["images"]
            if isinstance(src, list) and prompt[src[0]]["class_type"] in (MULTIVIEW, "PartGenRenderViews") and src[1] == 2:
                view = prompt[src[0]]["inputs"].get("view_size", 320)
                assert img.size == (2 * view, 3 * view), f"grid {f} is {img.size}, want 2x3 views of {view}px"

    for nid, ui in r["history"]["outputs"].items():  # every file any output node reports exists
        for entries in ui.values():
            for e in entries if isinstance(entries, list) else []:
                if isinstance(e, dict) and e.get("type") == "output" and "filename" in e:
                    f = Path(r["output_dir"]) / e.get("subfolder", "") / e["filename"]
                    assert f.is_file() and f.stat().st_size > 0, (nid, e)

    for nid in harness.nodes_of_class(prompt, "PartGenSaveParts"):  # the parts reached the GLB scene
        import trimesh

        (entry,) = r["history"]["outputs"][nid]["3d"]
        scene = trimesh.load(Path(r["output_dir"]) / entry["subfolder"] / entry["filename"], process=False)
        source = prompt[nid]["inputs"]["parts"][0]
        if "views" in prompt[source]["inputs"]:  # a whole object is one part
            assert sorted(scene.graph.nodes_geometry) == ["object"], scene.graph.nodes_geometry
        else:  # the selected parts, named by the selector; tiny random weights may leave one without surface
            selectors = harness.nodes_of_class(prompt, "PartGenSelectParts")
            top_k = prompt[selectors[0]]["inputs"]["top_k"]
            names = set(scene.graph.nodes_geometry)
            assert names and names <= {f"part_{i:02d}" for i in range(top_k)}, names
        assert all(len(g.faces) > 0 for g in scene.geometry.values())

    for mv in harness.nodes_of_class(prompt, MULTIVIEW):
        steps = prompt[mv]["inputs"]["steps"]
        prog = [d for d in _events(r, "progress") if str(d["node"]) == mv]
        assert [d["value"] for d in prog] == list(range(1, steps + 1)), prog
        assert all(d["max"] == steps for d in prog), prog


@pytest.mark.parametrize("name", sorted(VALIDATE_ONLY))
def test_validate_only_workflow_is_valid(results, name, comfyui_host):
    """Every node, link and setting passes ComfyUI's validation against the real node definitions."""
    if not harness.host_runs_twin(comfyui_host, name):
        pytest.skip(f"ComfyUI {comfyui_host.version} has no TextGenerate (or another core node of this workflow): "
                    f"it needs ComfyUI {harness.twin_required_host(name)}, extra.partgen.min_comfyui")
    r = results[name]
    assert r["valid"], _explain(r)
    assert "success" not in r  # validated only


def test_interrupt_stops_sampling(results):
    r = results["interrupt"]
    assert r["valid"], _explain(r)
    assert not r["success"]
    interrupted = _events(r, "execution_interrupted")
    assert interrupted, _explain(r)
    assert interrupted[0]["node_type"] == MULTIVIEW
    assert not _events(r, "execution_error"), _explain(r)
    # Interrupted at the next step after the one that triggered it, not after all 200.
    prog = [d for d in _events(r, "progress") if d["max"] == INTERRUPT_STEPS]
    assert 1 <= len(prog) <= 2, prog


def test_transparent_image_is_a_readable_error(results):
    r = results["transparent_image"]
    assert r["valid"], _explain(r)
    assert not r["success"]
    errors = _events(r, "execution_error")
    assert errors, _explain(r)
    err = errors[0]
    assert err["node_type"] == MULTIVIEW
    message = err["exception_message"]
    assert "no object" in message.lower(), message
    assert "Traceback (most recent call last)" not in message


def test_executor_is_built_as_the_hosts_main_does(results, comfyui_host):
    """0.30's executor reads cache_args["ram_inactive"] (a KeyError for every prompt when it is missing)."""
    r = results["core_smoke"]
    expected = {"lru", "ram", "ram_inactive"} if comfyui_host.version.startswith("0.30") else {"lru", "ram"}
    if comfyui_host.package_spec:  # a known release, not $COMFYUI_PATH
        assert set(r["cache_args"]) == expected, r["cache_args"]


def test_parts_travel_through_file3d_sockets(results, comfyui_path):
    """0.30+: Save Parts' FILE_3D_GLB output reaches core Preview3D and PartGen Load Parts (the parts come
    back with their names); hosts without File3D sockets keep the STRING path only (no such output)."""
    import trimesh

    if not host_has_file3d(comfyui_path):
        assert "file3d_round_trip" not in results
        return
    r = results["file3d_round_trip"]
    assert r["valid"] and r["success"], _explain(r)
    outputs = r["history"]["outputs"]
    shown = outputs["3"]["result"][0]  # Preview3D's ui: [file relative to output/, camera, background]
    assert shown.endswith(".glb") and (Path(r["output_dir"]) / shown).is_file(), outputs["3"]
    (entry,) = outputs["5"]["3d"]
    scene = trimesh.load(Path(r["output_dir"]) / entry["subfolder"] / entry["filename"], process=False)
    assert sorted(scene.graph.nodes_geometry) == CHAIR_PARTS


def test_core_load3d_feeds_load_parts(results, comfyui_path):
    """0.30+: core Load 3D's typed file reaches PartGen Load Parts; a format it cannot read gets a message
    naming the input and what to connect instead."""
    import trimesh

    if not host_has_file3d(comfyui_path):
        assert "load3d_to_parts" not in results
        return
    r = results["load3d_to_parts"]
    assert r["valid"] and r["success"], _explain(r)
    (entry,) = r["history"]["outputs"]["3"]["3d"]
    scene = trimesh.load(Path(r["output_dir"]) / entry["subfolder"] / entry["filename"], process=False)
    assert sorted(scene.graph.nodes_geometry) == CHAIR_PARTS
    wrong = results["load3d_wrong_format"]
    assert wrong["valid"] and not wrong["success"], _explain(wrong)
    (error,) = _events(wrong, "execution_error")
    assert error["node_type"] == "PartGenLoadParts", error
    assert error["exception_message"].strip() == ("model_3d: a stl file cannot become parts; connect a .glb, .gltf, .obj "
                                          "file (Load 3D, PartGen Save Parts)"), error["exception_message"]


@pytest.mark.comfyui_hosts("oldest")
def test_a_job_past_its_time_limit_fails_alone(comfyui_path, comfyui_base):
    """A prompt that overruns its limit gets a message naming it, its limit and the node it was in; the
    child is killed and the next prompt still runs (in a fresh executor)."""
    slow = _base_workflow()
    mv = _first_multiview(slow)
    slow[mv]["inputs"]["steps"] = INTERRUPT_STEPS
    jobs = [{"name": "slow", "prompt": slow, "timeout_s": 40},
            {"name": "after", "prompt": harness.core_smoke_prompt(16, 16, "tier2_after_timeout")}]
    slow_result, after = harness.run_executor(jobs, comfyui_base, root=comfyui_path, timeout_s=JOB_TIMEOUT_S)
    message = slow_result.get("harness_failure", "")
    assert "'slow' did not finish within its 40 s limit" in message, slow_result
    assert f"it was in node {mv} ({MULTIVIEW})" in message, message
    assert not slow_result["success"]
    assert "harness_failure" not in after, after.get("harness_failure")
    assert after["valid"] and after["success"], _explain(after)
    assert after["log_file"] != slow_result["log_file"]  # a fresh interpreter
