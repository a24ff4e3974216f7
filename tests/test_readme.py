"""Tier 3: the README's generated blocks match the workflows and a real ComfyUI's node definitions.

The workflow walkthroughs (Mermaid graph + the workflow's notes) are drawn from ``example_workflows/*.json`` and
the node reference from ``/object_info`` of ComfyUI 0.3.75 running this pack, so a changed tooltip,
node or workflow shows up here until ``python tools/sync_workflows.py`` is run.
"""

from __future__ import annotations

import difflib

import pytest

import comfyui_harness as harness
from partgen_tools.workflow_format import SYNC_COMMAND, render_readme

# The README documents the nodes as the oldest supported host lists them (the newer host adds only
# optional sockets and schema fields), so the generated text does not depend on which host ran last.
pytestmark = [pytest.mark.tier3, pytest.mark.comfyui_hosts("oldest")]

README = harness.REPO_ROOT / "README.md"


@pytest.fixture(scope="module")
def object_info(comfyui_path, comfyui_base) -> dict:
    server = harness.ComfyUIServer(comfyui_path, comfyui_base).start(timeout_s=180)
    try:
        return server.get_json("/object_info", timeout=60)
    finally:
        server.stop()


def test_readme_generated_blocks_are_up_to_date(object_info):
    current = README.read_text()
    expected = render_readme(current, harness.REPO_ROOT / "example_workflows", object_info, harness.REPO_ROOT)
    diff = "".join(difflib.unified_diff(current.splitlines(True), expected.splitlines(True), "README.md",
                                        "README.md (regenerated)", n=1))
    assert current == expected, f"README.md is out of date: run `{SYNC_COMMAND}`\n{diff[:6000]}"


def test_readme_covers_every_partgen_node_and_workflow(object_info):
    text = README.read_text()
    missing = [name for name in object_info if name.startswith("PartGen") and f"(`{name}`)" not in text]
    assert not missing, f"nodes missing from the node reference: {missing}; run `{SYNC_COMMAND}`"
    assert text.count("```mermaid") == len(list((harness.REPO_ROOT / "example_workflows").glob("*.json")))
