"""Tier 2: the planner nodes in ComfyUI's real executor (each host) on the tiny Qwen3-VL, an endpoint on a
loopback port, and the PlanPrompt -> (text generator) -> ParsePlan round trip with a canned reply.

The shipped PlanPrompt -> core TextGenerate -> ParsePlan workflow (``image_to_parts_mmpart_textgenerate``,
ComfyUI 0.30+) is validated against 0.30.0's node definitions in ``test_tier2_executor.py`` (validate-only:
core's Qwen3-VL loader builds only the real 4B/8B/32B widths, so no tiny checkpoint can run it); the round
trip here runs its two pack nodes on every host with a canned reply in TextGenerate's place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import comfyui_harness as harness
from test_planner_endpoint import GOOD, KEY, KEY_ENV, ChatServer

pytestmark = pytest.mark.tier2

IMAGE = harness.EXAMPLE_IMAGE.name
ENDPOINT = "loopback-test"


def _local_plan(on_unusable_reply: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": IMAGE}},
        "2": {"class_type": "PartGenLoadVLM", "inputs": {"model": "Qwen3-VL-4B-Instruct", "precision": "fp32"}},
        "3": {"class_type": "PartGenPlanParts", "inputs": {
            "vlm": ["2", 0], "image": ["1", 0], "parts": "body, head", "wishes": "the head is bald", "max_parts": 8,
            "temperature": 0.0, "seed": 0, "max_new_tokens": 16, "image_max_side": 64,
            "on_unusable_reply": on_unusable_reply}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 3]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}},  # runs once per prompt
    }


def _endpoint_plan(endpoint: str) -> dict:
    prompt = _local_plan("error")
    prompt["2"] = {"class_type": "PartGenVLMEndpoint", "inputs": {"endpoint": endpoint}}
    prompt["3"]["inputs"]["parts"] = "hat, head"
    return prompt


def _round_trip(reply: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": IMAGE}},
        "2": {"class_type": "PartGenPlanPrompt", "inputs": {"image": ["1", 0], "parts": "hat, head", "wishes": "",
                                                            "max_parts": 8}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        # Stands in for core TextGenerate (0.30+; not in 0.3.75; no tiny checkpoint loads in it): a chat VLM's reply.
        "4": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": reply}},
        "5": {"class_type": "PartGenParsePlan", "inputs": {"reply": ["4", 0], "image": ["1", 0], "parts": "hat, head",
                                                           "wishes": "", "max_parts": 8, "on_unusable_reply": "error"}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 3]}},
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["5", 2]}},
    }


@pytest.fixture(scope="module")
def results(comfyui_path, comfyui_base, monkeypatch_module) -> dict[str, dict]:
    server = ChatServer()
    try:
        endpoints = {ENDPOINT: {"base_url": f"http://127.0.0.1:{server.port}/v1", "model": "tiny", "api_key_env": KEY_ENV,
                                "timeout_s": 20}}
        monkeypatch_module.setenv("PARTGEN_VLM_ENDPOINTS", json.dumps(endpoints))  # the executor inherits it
        monkeypatch_module.setenv(KEY_ENV, KEY)
        jobs = [
            {"name": "local_template", "prompt": _local_plan("template")},
            {"name": "local_error", "prompt": _local_plan("error")},
            {"name": "endpoint", "prompt": _endpoint_plan(ENDPOINT)},
            {"name": "endpoint_unconfigured", "prompt": _endpoint_plan("attacker")},
            {"name": "round_trip", "prompt": _round_trip("```json\n" + json.dumps(GOOD) + "\n```")},
            {"name": "round_trip_bad", "prompt": _round_trip("a hat and a head")},
        ]
        out = harness.run_executor(jobs, comfyui_base, root=comfyui_path, timeout_s=900)
        by_name = {r["name"]: r for r in out}
        by_name["_server"] = {"requests": server.requests, "headers": server.headers}
        return by_name
    finally:
        server.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _events(result: dict, etype: str) -> list[dict]:
    return [data for event, data in result["messages"] if event == etype]


def _explain(result: dict) -> str:
    return (f"valid={result['valid']} node_errors={result.get('node_errors')} errors={_events(result, 'execution_error')}\n"
            + harness._tail(Path(result["log_file"]), 3000))


def _texts(result: dict, node_id: str) -> list[str]:
    return list(result["history"]["outputs"][node_id]["text"])


def test_local_vlm_plans_through_loader_generate_and_named_fallback(results):
    r = results["local_template"]
    assert r["valid"] and r["success"], _explain(r)
    (preview,) = _texts(r, "4")
    assert "2 parts for a" in preview and "template (fallback; vlm:Qwen3-VL-4B-Instruct" in preview
    prompts = _texts(r, "5")
    assert len(prompts) == 2 and "except the body" in prompts[0] and "the head is bald" in prompts[1]
    progress = [d for d in _events(r, "progress") if str(d["node"]) == "3"]
    assert progress and all(d["max"] == 16 for d in progress), progress  # one step per generated token


def test_garbage_reply_is_a_readable_error(results):
    r = results["local_error"]
    assert r["valid"] and not r["success"]
    (error,) = _events(r, "execution_error")
    assert error["node_type"] == "PartGenPlanParts"
    assert "gave no usable part plan, also when asked again" in error["exception_message"]


def test_endpoint_plans_and_key_stays_in_the_request(results):
    r = results["endpoint"]
    assert r["valid"] and r["success"], _explain(r)
    (preview,) = _texts(r, "4")
    assert "vlm:loopback-test" in preview and "1. hat" in preview
    server = results["_server"]
    assert len(server["requests"]) == 1 and server["headers"][0]["Authorization"] == f"Bearer {KEY}"
    log = Path(r["log_file"]).read_text(errors="replace")
    assert KEY not in log and KEY not in json.dumps(r["history"]) and KEY not in json.dumps(r["messages"])


def test_workflow_cannot_name_an_unconfigured_endpoint(results):
    """A shared workflow naming an endpoint this server's operator did not configure is refused (by
    combo validation where the host checks V3 combos, else by the node) before anything is sent."""
    r = results["endpoint_unconfigured"]
    if r["valid"]:
        assert not r["success"]
        (error,) = _events(r, "execution_error")
        assert error["node_type"] == "PartGenVLMEndpoint"
        assert "'attacker' is not configured on this server (configured: 'loopback-test')" in error["exception_message"]
    else:
        assert "attacker" in json.dumps(r["node_errors"])
    assert len(results["_server"]["requests"]) == 1  # only the configured endpoint's job reached the server


def test_plan_prompt_to_parse_plan_round_trip(results):
    r = results["round_trip"]
    assert r["valid"] and r["success"], _explain(r)
    (prompt,) = _texts(r, "3")
    assert '"hat", "head"' in prompt and "JSON" in prompt
    (preview,) = _texts(r, "6")
    assert "2 parts for a" in preview and "planner: text" in preview
    assert _texts(r, "7") == ["hat", "head"]


def test_unusable_generated_text_is_a_readable_error(results):
    r = results["round_trip_bad"]
    (error,) = _events(r, "execution_error")
    assert error["node_type"] == "PartGenParsePlan"
    assert "not a usable part plan: the reply is not JSON" in error["exception_message"]
