"""Tier 1: the shipped UI workflows are laid out so that nothing overlaps and the saved view shows the notes.

What the editor draws for a node: its ``size`` below ``pos`` plus a title bar above it
(``NODE_TITLE_HEIGHT``). Two nodes whose drawn boxes intersect hide each other's widgets or titles
(how ComfyUI's frontend showed Save Parts under a note and KSampler over VAE Decode). The saved view
(``extra.ds``: screen = (canvas + offset) · scale) must open on the top-left of the graph, where the
first notes are, on a small (1280×720) window. The screenshots that checked this in the real frontend
come from ``tools/frontend_screenshots.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "example_workflows"
UI_FILES = sorted(WORKFLOWS_DIR.glob("*.json"))

NODE_TITLE_HEIGHT = 30  # LiteGraph's title bar, drawn above pos
BADGE_HEIGHT = 24       # 0.30's frontend draws a custom node's source badge ("comfyui-partgen") above its title
GAP = 10                # nodes closer than this look joined
NOTE_TYPES = {"Note", "MarkdownNote"}
SCREEN = (1280, 720)    # a small laptop window
VIEW_MARGIN_PX = 60     # where the graph's top-left corner lands on screen (clear of the menu bar)
FIT_WIDTH_PX = 1800     # the saved scale fits this many pixels of graph width...
MIN_SCALE, MAX_SCALE = 0.6, 0.75  # ...within a readable range (below 0.6 the editor draws no text)


def _xy(value) -> tuple[float, float]:
    return (value[0], value[1]) if isinstance(value, list) else (value["0"], value["1"])


def node_box(node: dict) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) as drawn, title bar (and a pack node's badge) included."""
    (x, y), (w, h) = _xy(node["pos"]), _xy(node["size"])
    badge = BADGE_HEIGHT if str(node.get("type", "")).startswith("PartGen") else 0
    return x, y - NODE_TITLE_HEIGHT - badge, x + w, y + h


def graph_bounds(workflow: dict) -> tuple[float, float, float, float]:
    boxes = [node_box(n) for n in workflow["nodes"]]
    boxes += [(g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
               g["bounding"][1] + g["bounding"][3]) for g in workflow.get("groups", [])]
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _overlap(a, b, gap: float = GAP) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def overlapping_nodes(workflow: dict) -> list[str]:
    nodes = workflow["nodes"]
    found = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            if _overlap(node_box(a), node_box(b)):
                found.append(f"{a['type']} #{a['id']} and {b['type']} #{b['id']}")
    return found


def on_screen(box, ds: dict, screen=SCREEN) -> bool:
    scale, (ox, oy) = ds["scale"], _xy(ds["offset"])
    left, top = (box[0] + ox) * scale, (box[1] + oy) * scale
    return 0 <= left and 0 <= top and left < screen[0] and top < screen[1]


def test_the_checks_catch_what_they_check():
    a = {"id": 1, "type": "A", "pos": [0, 0], "size": [100, 100]}
    below = {"id": 2, "type": "B", "pos": [0, 120], "size": [100, 100]}  # its title bar reaches y=90
    assert overlapping_nodes({"nodes": [a, below]}) == ["A #1 and B #2"]
    assert overlapping_nodes({"nodes": [a, {**below, "pos": [0, 150]}]}) == []
    assert not on_screen(node_box({"pos": [0, -620], "size": [10, 10]}), {"scale": 0.6, "offset": [80, 420]})
    assert on_screen(node_box({"pos": [0, 0], "size": [10, 10]}), {"scale": 0.6, "offset": [80, 420]})


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.name)
def test_no_two_nodes_overlap(ui_file):
    workflow = json.loads(ui_file.read_text())
    assert not overlapping_nodes(workflow), f"{ui_file.name}: nodes drawn over each other: {overlapping_nodes(workflow)}"


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.name)
def test_saved_view_opens_on_the_notes(ui_file):
    workflow = json.loads(ui_file.read_text())
    ds = workflow["extra"]["ds"]
    assert MIN_SCALE <= ds["scale"] <= MAX_SCALE, ds
    notes = [n for n in workflow["nodes"] if n["type"] in NOTE_TYPES]
    assert notes, f"{ui_file.name} has no note"
    first = min(notes, key=lambda n: (_xy(n["pos"])[0], _xy(n["pos"])[1]))
    assert on_screen(node_box(first), ds), f"{ui_file.name}: the first note #{first['id']} starts off screen at {ds}"
    x0, y0, _, _ = graph_bounds(workflow)
    assert on_screen((x0, y0, x0, y0), ds), f"{ui_file.name}: the graph's top-left corner is off screen at {ds}"
