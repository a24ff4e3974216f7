"""The README's status list matches the nodes that exist (tier 1: node ids read from the node sources).

The status block is generated (``partgen_tools.readme_status``); this test fails when a node is added
or removed without the README being regenerated, when a registered node belongs to no method stage,
or when the package metadata claims a method whose nodes do not all exist.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from partgen_tools.readme_status import STAGES, node_ids_in_sources, status_section, unplaced_nodes
from partgen_tools.workflow_format import SYNC_COMMAND, replace_block

pytestmark = pytest.mark.tier1

REPO = Path(__file__).resolve().parents[1]
NODE_IDS = node_ids_in_sources(REPO / "nodes")


def test_status_block_is_generated_from_the_registered_nodes():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme == replace_block(readme, "status", status_section(NODE_IDS)), f"status out of date: run `{SYNC_COMMAND}`"


def test_every_registered_node_belongs_to_a_stage_or_the_support_nodes():
    assert "PartGenSegment" in NODE_IDS and len(NODE_IDS) == len(set(NODE_IDS))
    assert not unplaced_nodes(NODE_IDS), (
        f"nodes {unplaced_nodes(NODE_IDS)} are in no stage of partgen_tools/readme_status.py: add them to STAGES or "
        "SUPPORT_NODES, then run " + SYNC_COMMAND)


def test_status_says_what_exists_and_nothing_more():
    mmpart = {n for stage in STAGES if stage.method == "MMPart" for n in stage.node_ids}
    partial = status_section([n for n in NODE_IDS if n not in mmpart] + ["PartGenLoadVLM", "PartGenPlanParts"])
    assert "**MMPart**: available: a VLM writes one isolation prompt per named part. Not available yet:" in partial
    text = status_section(NODE_IDS)
    for method in dict.fromkeys(stage.method for stage in STAGES):
        complete = all(n in NODE_IDS for s in STAGES if s.method == method for n in s.node_ids)
        assert (f"**{method}**: every stage is available" in text) == complete


def test_package_metadata_claims_only_complete_methods():
    complete = {m for m in {s.method for s in STAGES}
                if all(n in NODE_IDS for s in STAGES if s.method == m for n in s.node_ids)}
    description = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["description"]
    entry_doc = (REPO / "__init__.py").read_text(encoding="utf-8").split('"""')[1]
    for method in {s.method for s in STAGES} - complete:
        assert not re.search(rf"\b{method}\b", description), f"pyproject.toml claims {method}: {description}"
        assert not re.search(rf"\b{method}\b", entry_doc), f"__init__.py claims {method}: {entry_doc}"
