"""Tier 3: a real ComfyUI server on a loopback port, driven over HTTP and its websocket, once per host
(0.3.75 and 0.30.0; the host is in every test id).

One server per module and host (``python main.py --cpu --listen 127.0.0.1 --port <free> ...``, see
``comfyui_harness.ComfyUIServer.command``), our pack loaded through ``extra_model_paths.yaml``, tiny
checkpoints in ``models/partgen``. Every wait is bounded; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import copy
import io
import urllib.parse

import pytest

import comfyui_harness as harness

pytestmark = pytest.mark.tier3

MULTIVIEW = "PartGenMultiView"
EXPECTED_NODES = {"PartGenLoadMultiViewModel", MULTIVIEW}
# Tier 2 runs the shipped workflow at its own step count; here a few steps prove the per-step
# progress contract at a fraction of the time (each step is seconds on 2 CPU cores).
PROGRESS_STEPS = 3
INTERRUPT_STEPS = 200


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


def _views_workflow() -> dict:
    workflows = harness.load_api_workflows()
    if "image_to_views_api.json" in workflows:  # the shortest graph; the others run whole pipelines after it
        return copy.deepcopy(workflows["image_to_views_api.json"])
    for prompt in workflows.values():
        if harness.nodes_of_class(prompt, MULTIVIEW):
            return copy.deepcopy(prompt)
    pytest.fail("no example_workflows/api/*_api.json contains a PartGenMultiView node")


def _multiview_id(prompt: dict) -> str:
    return harness.nodes_of_class(prompt, MULTIVIEW)[0]


def test_core_prompt_round_trip(server):
    """The harness itself, on core nodes only: queue, websocket, history, view."""
    run = server.run_prompt(harness.core_smoke_prompt(32, 24, "tier3_smoke"), timeout_s=60)
    assert run.final_type == "execution_success", run.summary()
    hist = server.history(run.prompt_id)
    assert hist["status"]["status_str"] == "success", hist
    image = hist["outputs"]["2"]["images"][0]
    status, ctype, body = server.get_bytes("/view?" + urllib.parse.urlencode(image))
    assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n", (status, ctype)


def test_object_info_lists_every_partgen_node_with_tooltips(object_info, server):
    ours = {name: info for name, info in object_info.items() if name.startswith("PartGen")}
    assert EXPECTED_NODES <= set(ours), (
        f"missing {EXPECTED_NODES - set(ours)}; server log:\n{server.log_tail()}")
    missing = []
    for name, info in ours.items():
        assert info["category"].startswith("PartGen"), (name, info["category"])
        for section in ("required", "optional"):
            for input_name, spec in info["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if not str(options.get("tooltip", "")).strip():
                    missing.append(f"{name}.{input_name}")
    assert not missing, f"inputs without a tooltip: {missing}"


def test_views_workflow_progress_history_and_view(server):
    from PIL import Image

    prompt = _views_workflow()
    mv = _multiview_id(prompt)
    prompt[mv]["inputs"]["steps"] = PROGRESS_STEPS
    run = server.run_prompt(prompt, timeout_s=600)
    assert run.post_status == 200, run.summary()
    assert run.final_type == "execution_success", run.summary() + "\n" + server.log_tail()

    progress = run.progress_of(mv)
    assert [p["value"] for p in progress] == list(range(1, PROGRESS_STEPS + 1)), progress
    assert all(p["max"] == PROGRESS_STEPS for p in progress), progress
    # Each step's preview reaches the client as a binary PREVIEW_IMAGE frame that decodes.
    previews = run.preview_images()
    assert len(previews) >= PROGRESS_STEPS, f"{run.binary_messages} binary frames; {run.summary()}"
    for fmt, data in previews:
        Image.open(io.BytesIO(data)).verify()
    executing = [d.get("node") for d in run.of_type("executing")]
    assert mv in executing, executing

    hist = server.history(run.prompt_id)
    assert hist["status"]["status_str"] == "success" and hist["status"]["completed"], hist.get("status")
    save = harness.nodes_of_class(prompt, "SaveImage")
    assert save, "the views workflow should save its grid"
    images = hist["outputs"][save[0]]["images"]
    assert images and images[0]["type"] == "output", hist["outputs"]

    view_size = prompt[mv]["inputs"].get("view_size", 320)
    status, ctype, body = server.get_bytes("/view?" + urllib.parse.urlencode(images[0]), timeout=60)
    assert status == 200 and ctype == "image/png", (status, ctype)
    grid = Image.open(io.BytesIO(body))
    assert grid.size == (2 * view_size, 3 * view_size), grid.size


def test_interrupt_while_sampling(server):
    prompt = _views_workflow()
    mv = _multiview_id(prompt)
    prompt[mv]["inputs"]["steps"] = INTERRUPT_STEPS
    run = server.run_prompt(prompt, timeout_s=300, interrupt_on_progress_of=mv)
    assert run.interrupt_status == 200, run.summary()
    assert run.final_type == "execution_interrupted", run.summary() + "\n" + server.log_tail()
    assert run.final["data"]["node_type"] == MULTIVIEW
    assert len(run.progress_of(mv)) < 10, "sampling went on long after the interrupt"
    assert not run.of_type("execution_error"), run.summary()
    hist = server.history(run.prompt_id)
    assert hist["status"]["status_str"] == "error", hist.get("status")  # how ComfyUI files interrupts

    # The server is usable again straight away.
    after = server.run_prompt(harness.core_smoke_prompt(16, 16, "tier3_after_interrupt"), timeout_s=60)
    assert after.final_type == "execution_success", after.summary()


def test_transparent_image_gives_a_readable_error(server):
    prompt = _views_workflow()
    mv = _multiview_id(prompt)
    loader = harness.nodes_of_class(prompt, "LoadImage")[0]
    prompt[loader]["inputs"]["image"] = "partgen_transparent.png"
    prompt[mv]["inputs"]["steps"] = 2
    run = server.run_prompt(prompt, timeout_s=300)
    assert run.final_type == "execution_error", run.summary()
    err = run.final["data"]
    assert err["node_type"] == MULTIVIEW and err["node_id"] == mv, err
    message = err["exception_message"]
    assert "no object" in message.lower(), message
    assert "Traceback (most recent call last)" not in message, message
    hist = server.history(run.prompt_id)
    assert hist["status"]["status_str"] == "error", hist.get("status")


def test_out_of_range_steps_fail_validation(server):
    prompt = _views_workflow()
    mv = _multiview_id(prompt)
    prompt[mv]["inputs"]["steps"] = 0
    status, body = server.post_json("/prompt", {"prompt": prompt, "client_id": "tier3-validation"})
    assert status == 400, body
    assert mv in body["node_errors"], body
    reasons = body["node_errors"][mv]["errors"]
    assert any(e.get("extra_info", {}).get("input_name") == "steps" for e in reasons), reasons


def _fast(prompt: dict, object_info: dict, steps: int = PROGRESS_STEPS) -> dict:
    """The workflow with every PartGen node's ``steps`` cut to a few (within its declared range)."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        inputs, info = node.get("inputs", {}), object_info.get(node.get("class_type"), {})
        spec = {**info.get("input", {}).get("required", {}), **info.get("input", {}).get("optional", {})}
        if node["class_type"].startswith("PartGen") and isinstance(inputs.get("steps"), int) and "steps" in spec:
            low = spec["steps"][1].get("min", 1) if len(spec["steps"]) > 1 else 1
            inputs["steps"] = max(low, min(inputs["steps"], steps))
    return prompt


# Tier 2 executes every shipped workflow; these re-run the full pipelines (minutes each on CPU) only
# where a node first produces its kind of output: the mesh and edit examples reuse the same output nodes.
SERVED_ELSEWHERE = ("mesh_to_parts_api.json", "edit_part_api.json")
# Newer hosts: one pipeline that ends in a GLB proves /view serves our files there; tier 2 runs the
# others on every host (CI time).
SERVED_ON_EVERY_HOST = "image_to_object_mesh_api.json"


@pytest.mark.parametrize("name", [n for n in sorted(harness.load_api_workflows()) if n not in SERVED_ELSEWHERE])
def test_every_shipped_workflow_serves_its_outputs(server, object_info, name, comfyui_host):
    """Each shipped API workflow (steps cut short) succeeds and /view serves every file it reports."""
    if comfyui_host in harness.HOSTS[1:] and name != SERVED_ON_EVERY_HOST:
        pytest.skip(f"on ComfyUI {comfyui_host.version} tier 2 runs it; {SERVED_ON_EVERY_HOST} is served here")
    # 2 steps: unlike the other tests here, so that no node of it is served from the cache.
    prompt = _fast(harness.load_api_workflows()[name], object_info, steps=2)
    run = server.run_prompt(prompt, timeout_s=600)
    assert run.final_type == "execution_success", run.summary() + "\n" + server.log_tail()
    hist = server.history(run.prompt_id)
    files = [entry for ui in hist["outputs"].values() for entries in ui.values()
             if isinstance(entries, list) for entry in entries
             if isinstance(entry, dict) and "filename" in entry and entry.get("type") == "output"]
    assert files, f"{name} reports no output file: {hist['outputs']}"
    for entry in files:
        query = {k: entry.get(k, "") for k in ("filename", "subfolder", "type")}
        status, ctype, body = server.get_bytes("/view?" + urllib.parse.urlencode(query), timeout=60)
        assert status == 200 and body, (entry, status)
        if entry["filename"].endswith(".png"):
            assert body[:8] == b"\x89PNG\r\n\x1a\n", entry
        elif entry["filename"].endswith(".glb"):
            assert body[:4] == b"glTF", entry
