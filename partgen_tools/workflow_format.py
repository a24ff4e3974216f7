"""ComfyUI workflow files: UI format → API format, Mermaid diagrams, and the README's generated sections.

Two formats (see ``shared/REFERENCE.md``, "ComfyUI facts"):

- UI format (what the editor saves and the template browser loads, ``version`` 0.4): ``nodes`` with
  ``id``, ``type``, ``pos``, ``size``, ``mode``, ``inputs`` (sockets, each with the ``link`` feeding it),
  ``outputs``, ``widgets_values`` (the widgets' values by position) and ``title``; ``links`` as
  ``[id, origin_id, origin_slot, target_id, target_slot, type]``; ``groups``; ``extra``.
- API format (what ``POST /prompt`` takes): ``{node_id: {"class_type", "inputs": {name: value |
  [source_id, slot]}, "_meta": {"title"}}}``.

The conversion is what the editor's "Export (API)" does, and needs each node's definition from the
server's ``/object_info``: ``widgets_values`` are positional, so their names come from the node's
inputs in order (required, then optional; ``input_order`` where given) that are widgets, i.e. INT,
FLOAT, STRING, BOOLEAN or COMBO not forced to be a socket. The editor adds widgets that are not
inputs, and their values sit in ``widgets_values`` too: a "control after generate" value right after
each input that has ``control_after_generate`` (seeds), and an upload button after the required
widgets of a node with an image/video upload input (LoadImage saves ``["file.png", "image"]``).
Values beyond a node's known widgets are ignored: viewers and buttons added by frontend extensions
(Preview3D, SaveGLB) append theirs there; missing trailing values (a node that gained inputs after the
file was saved) take the widgets' defaults, as in the editor. Linked inputs, including widgets turned into sockets, take
the link. Frontend-only nodes (notes, reroutes, primitives) never reach the server: reroutes are
followed, a primitive's value is already the target widget's value, muted nodes (mode 2) are left out
and bypassed ones (mode 4) pass their first input of the link's type through, as the editor does.

Nothing here imports ComfyUI: the definitions are the JSON of a real server's ``/object_info``, which
the tests and ``tools/sync_workflows.py`` obtain from ComfyUI itself.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
FRONTEND_ONLY_TYPES = NOTE_TYPES | {"Reroute", "PrimitiveNode"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload")
MODE_NEVER, MODE_BYPASS = 2, 4
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # 0.30+: a combo whose chosen option brings its own widgets

API_SUFFIX = "_api.json"
# The folder ComfyUI's template browser reads in a custom node pack (0.3.75 and 0.30.0 also accept
# "workflows", "examples", ... but log that the pack should rename it to this).
EXAMPLE_FOLDER = "example_workflows"
API_FOLDER = "api"  # example_workflows/api/: served with the UI files but not listed in the template browser
# A file name every OS accepts: no path separators, nothing Windows reserves, no control characters.
_UNSAFE_FILE_NAME = re.compile(r'[\\/:*?"<>|\x00-\x1f]')
README_BLOCKS = ("workflows", "node-reference")
SYNC_COMMAND = "python tools/sync_workflows.py"
# Combos listing files on disk: their options depend on the installation, so the reference omits them.
_FILE_LIST_INPUTS = frozenset({"model", "file", "image", "ckpt_name"})


class WorkflowFormatError(ValueError):
    """The workflow cannot be converted; the message names the node and what is wrong."""


# ------------------------------------------------------------------------------------------------
# Node definitions (/object_info entries)


def _spec_options(spec: list) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def is_widget(spec: list) -> bool:
    """Whether an input spec ``[type, options]`` is edited by a widget (else it is a socket)."""
    kind, options = spec[0], _spec_options(spec)
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES or kind == DYNAMIC_COMBO


def ordered_inputs(info: dict, section: str) -> list[tuple[str, list]]:
    """A node's inputs of one section (``required``/``optional``) in the editor's order."""
    specs = info.get("input", {}).get(section, {})
    order = info.get("input_order", {}).get(section) or list(specs)
    return [(name, specs[name]) for name in order if name in specs]


def widget_entries(info: dict, values: Optional[list] = None) -> list[tuple[Optional[str], Optional[list]]]:
    """``(input name, spec)`` behind each position of ``widgets_values``; ``(None, None)`` where the editor
    adds a widget of its own (control after generate, upload button). A V3 dynamic combo (0.30's
    TextGenerate ``sampling_mode``) is followed by the widgets of the option it is set to, named
    ``combo.child`` as the server expects them; ``values`` tells which option (default: the first)."""
    entries: list[tuple[Optional[str], Optional[list]]] = []

    def add(name: str, spec: list) -> None:
        entries.append((name, spec))
        if _spec_options(spec).get("control_after_generate"):
            entries.append((None, None))
        if spec[0] == DYNAMIC_COMBO:
            index = len(entries) - 1
            chosen = values[index] if values is not None and index < len(values) else widget_default(spec)
            for option in _spec_options(spec).get("options") or []:
                if isinstance(option, dict) and option.get("key") == chosen:
                    for section in ("required", "optional"):
                        for child, child_spec in (option.get("inputs") or {}).get(section, {}).items():
                            if is_widget(child_spec):
                                add(f"{name}.{child}", child_spec)

    for section in ("required", "optional"):
        inputs = ordered_inputs(info, section)
        for name, spec in inputs:
            if is_widget(spec):
                add(name, spec)
        if section == "required" and any(_spec_options(s).get(f) for _, s in inputs for f in UPLOAD_FLAGS):
            entries.append((None, None))
    return entries


def widget_slots(info: dict, values: Optional[list] = None) -> list[Optional[str]]:
    """The input name behind each position of ``widgets_values``; None where the editor adds a
    widget of its own (control after generate, upload button)."""
    return [name for name, _ in widget_entries(info, values)]


# ------------------------------------------------------------------------------------------------
# UI → API


@dataclass(frozen=True)
class _Link:
    origin_id: int
    origin_slot: int
    target_id: int
    target_slot: int
    type: str


def _links(workflow: dict) -> dict[int, _Link]:
    links = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):  # schema version 1 writes links as objects
            links[link["id"]] = _Link(link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                                      str(link.get("type", "")))
        else:
            link_id, origin_id, origin_slot, target_id, target_slot, kind = link[:6]
            links[link_id] = _Link(origin_id, origin_slot, target_id, target_slot, str(kind))
    return links


def _describe(node: dict) -> str:
    return f"node {node.get('id')} ({node.get('type')}{', ' + repr(node['title']) if node.get('title') else ''})"


def _check_ui(workflow: Any) -> None:
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        raise WorkflowFormatError("not a UI-format workflow: it has no 'nodes' list (an API-format file needs no conversion)")
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise WorkflowFormatError("workflows with subgraphs are not supported; unpack the subgraphs in the editor first")


def _source(link_id: int, links: dict[int, _Link], nodes: dict[int, dict], target: dict) -> Optional[list]:
    """``[origin_id, slot]`` for what feeds a link, following reroutes and bypassed nodes; None when
    nothing the server runs feeds it (a primitive, a muted node, a dangling reroute)."""
    seen = set()
    while True:
        if link_id in seen:
            raise WorkflowFormatError(f"{_describe(target)}: its input links form a loop through reroutes")
        seen.add(link_id)
        link = links.get(link_id)
        if link is None:
            raise WorkflowFormatError(f"{_describe(target)}: link {link_id} is not in the workflow's 'links'")
        origin = nodes.get(link.origin_id)
        if origin is None:
            raise WorkflowFormatError(f"{_describe(target)}: link {link_id} comes from node {link.origin_id}, which does not exist")
        if origin.get("type") == "PrimitiveNode" or origin.get("mode") == MODE_NEVER:
            return None
        if origin.get("type") == "Reroute" or origin.get("mode") == MODE_BYPASS:
            through = [i for i in origin.get("inputs", []) if i.get("link") is not None
                       and (origin.get("type") == "Reroute" or i.get("type") in (link.type, "*"))]
            if not through:
                return None
            link_id = through[0]["link"]
            continue
        return [str(link.origin_id), link.origin_slot]


_TYPE_DEFAULTS = {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}


def widget_default(spec: list) -> Any:
    """The value a new widget starts with in the editor: its default, else a combo's first option."""
    options = _spec_options(spec)
    if "default" in options:
        return options["default"]
    choices = spec[0] if isinstance(spec[0], list) else options.get("options")
    if choices is not None:
        if choices and isinstance(choices[0], dict):  # a dynamic combo's options: the first one's key
            return choices[0].get("key", "")
        return choices[0] if choices else ""
    return _TYPE_DEFAULTS.get(spec[0], None)


def _widget_inputs(node: dict, info: dict) -> dict[str, Any]:
    """Widget values by input name. A node saved before it gained inputs has fewer values: the editor
    keeps the new widgets at their defaults, and so does this (packs append inputs for that reason)."""
    values = node.get("widgets_values") or []
    if isinstance(values, dict):  # some extensions save widgets by name
        entries = widget_entries(info)
        return {name: values.get(name, widget_default(spec)) for name, spec in entries if name is not None}
    entries = widget_entries(info, list(values))
    padded = list(values) + [widget_default(spec) if name else None for name, spec in entries[len(values):]]
    return {name: value for (name, _), value in zip(entries, padded) if name is not None}


def complete_widget_values(workflow: dict, object_info: dict) -> dict:
    """``workflow`` with every node's missing trailing widget values filled in with their defaults, as
    opening and saving it in the editor does after a node gained inputs."""
    workflow = json.loads(json.dumps(workflow))
    for node in workflow.get("nodes", []):
        info = object_info.get(node.get("type"))
        values = node.get("widgets_values")
        if info is None or not isinstance(values, list):
            continue
        entries = widget_entries(info, values)
        if len(values) < len(entries):
            previous = entries[len(values) - 1][1] if values else None
            for name, spec in entries[len(values):]:
                # an editor widget after a seed is its "control after generate" mode; keep seeds as saved
                seeded = previous is not None and _spec_options(previous).get("control_after_generate")
                values.append(widget_default(spec) if name else ("fixed" if seeded else "image"))
                previous = spec
    return workflow


def ui_to_api(workflow: dict, object_info: dict) -> dict[str, dict]:
    """The API-format prompt of a UI-format ``workflow``, given the server's ``/object_info``."""
    _check_ui(workflow)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = _links(workflow)
    prompt: dict[str, dict] = {}
    for node_id in sorted(nodes, key=lambda i: (isinstance(i, str), i)):
        node = nodes[node_id]
        kind = node.get("type")
        if kind in FRONTEND_ONLY_TYPES or node.get("mode") in (MODE_NEVER, MODE_BYPASS):
            continue
        info = object_info.get(kind)
        if info is None:
            raise WorkflowFormatError(f"{_describe(node)}: this ComfyUI has no node {kind!r} (a missing custom node pack?)")
        inputs = _widget_inputs(node, info)
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            source = _source(slot["link"], links, nodes, node)
            if source is not None:
                inputs[slot["name"]] = source
        prompt[str(node_id)] = {"class_type": kind, "inputs": _ordered(inputs, info),
                                "_meta": {"title": node.get("title") or info.get("display_name") or kind}}
    return prompt


def _ordered(inputs: dict[str, Any], info: dict) -> dict[str, Any]:
    """Inputs in the node's definition order (a stable, readable API file)."""
    order = [name for section in ("required", "optional") for name, _ in ordered_inputs(info, section)]
    ranked = {name: index for index, name in enumerate(order)}
    return dict(sorted(inputs.items(), key=lambda item: ranked.get(item[0], len(ranked))))


def dump_ui(workflow: dict) -> str:
    """The text of a UI-format file, as the repository keeps them."""
    return json.dumps(workflow, indent=2, ensure_ascii=False) + "\n"


def dump_api(prompt: dict[str, dict]) -> str:
    """The text of an API-format file, as the repository keeps them."""
    return json.dumps(prompt, indent=2, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------------------------------------
# Workflow files


def ui_workflow_files(folder: Path) -> list[Path]:
    """The UI-format workflows of ``folder`` (``example_workflows/``), in walkthrough order."""
    files = [p for p in Path(folder).glob("*.json") if not p.name.endswith(API_SUFFIX)]
    return sorted(files, key=lambda p: (_walkthrough(json.loads(p.read_text())).get("order", 1000), p.name))


def template_file_name(title: str) -> str:
    """The UI file's name for a workflow titled ``title``.

    ComfyUI's template browser (frontends 1.32 and 1.47, which ComfyUI 0.3.75 and 0.30.0 pin) titles a
    custom node's template with its file stem and nothing else: the i18n lookup
    ``templateWorkflows.template.<module>.<name>`` is made for ComfyUI's own templates only. So the stem
    is the title, with the arrow written out (``Image → parts`` becomes ``Image to parts``) to keep
    file names plain ASCII."""
    stem = " ".join(title.replace("→", "to").split())
    if not stem or _UNSAFE_FILE_NAME.search(stem) or not stem.isascii() or stem.endswith("."):
        raise WorkflowFormatError(f"workflow title {title!r} cannot be a file name on every OS: use plain ASCII "
                                  "without \\ / : * ? \" < > |, not ending in a dot")
    return f"{stem}.json"


def api_twin_path(ui_file: Path, workflow: Optional[dict] = None) -> Path:
    """``api/<extra.partgen.api_twin>`` beside the UI file: the twin keeps a short snake_case name for
    scripts (``image_to_parts_api.json``) while the UI file is named after its title."""
    if workflow is None:
        workflow = json.loads(Path(ui_file).read_text())
    name = _walkthrough(workflow).get("api_twin") or f"{Path(ui_file).stem}{API_SUFFIX}"
    if not name.endswith(API_SUFFIX) or _UNSAFE_FILE_NAME.search(name):
        raise WorkflowFormatError(f"{Path(ui_file).name}: extra.partgen.api_twin {name!r} must be a plain file "
                                  f"name ending in {API_SUFFIX}")
    return Path(ui_file).parent / API_FOLDER / name


def _walkthrough(workflow: dict) -> dict:
    """``extra.partgen``: the walkthrough's title (also the file's name, see ``template_file_name``), its
    summary and place in the README, the API twin's file name, and ``min_comfyui``, the oldest ComfyUI
    whose core has every node the workflow uses (absent: the oldest host we support)."""
    return (workflow.get("extra") or {}).get("partgen") or {}


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError as exc:
        raise WorkflowFormatError(f"{version!r} is not a ComfyUI version like '0.30.0'") from exc


def required_host(workflow: dict) -> Optional[str]:
    """The oldest ComfyUI version the workflow needs (``extra.partgen.min_comfyui``), or None for any host
    we support. A workflow built on newer core nodes (TextGenerate, ComfyUI 0.30+) says so here, so that
    its API twin is generated from, and validated on, a host that has them."""
    version = _walkthrough(workflow).get("min_comfyui")
    if version is not None:
        _version_key(str(version))
    return str(version) if version is not None else None


def host_can_run(workflow: dict, host_version: str) -> bool:
    """Whether a ComfyUI of ``host_version`` has the workflow's core nodes, by its ``min_comfyui``; a host
    whose version is unknown (a checkout, "custom") is assumed new enough."""
    needed = required_host(workflow)
    if needed is None:
        return True
    try:
        return _version_key(host_version) >= _version_key(needed)
    except WorkflowFormatError:
        return True


# ------------------------------------------------------------------------------------------------
# Mermaid


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def _inside(node: dict, group: dict) -> bool:
    x, y, w, h = group["bounding"]
    px, py = node.get("pos", [0, 0])[:2]
    return x <= px <= x + w and y <= py <= y + h


def mermaid(workflow: dict, object_info: Optional[dict] = None) -> str:
    """A Mermaid flowchart of the nodes the server runs (notes left out), grouped as the editor groups
    them, each edge labelled with its socket type. Titles come from the file; ``object_info`` only
    supplies display names for untitled nodes."""
    _check_ui(workflow)
    nodes = {n["id"]: n for n in workflow["nodes"] if n.get("type") not in FRONTEND_ONLY_TYPES}
    links = _links(workflow)
    all_nodes = {n["id"]: n for n in workflow["nodes"]}

    def label(node: dict) -> str:
        info = (object_info or {}).get(node["type"], {})
        title = node.get("title") or info.get("display_name") or node["type"]
        return f'n{node["id"]}["{_mermaid_text(title)}"]'

    lines = ["flowchart LR"]
    placed = set()
    for index, group in enumerate(workflow.get("groups") or []):
        members = [n for nid, n in sorted(nodes.items()) if nid not in placed and _inside(n, group)]
        if not members:
            continue
        lines.append(f'  subgraph g{index + 1}["{_mermaid_text(group.get("title", ""))}"]')
        lines += [f"    {label(n)}" for n in members]
        lines.append("  end")
        placed.update(n["id"] for n in members)
    lines += [f"  {label(n)}" for nid, n in sorted(nodes.items()) if nid not in placed]
    edges = []
    for nid, node in sorted(nodes.items()):
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            source = _source(slot["link"], links, all_nodes, node)
            if source is not None:
                edges.append((int(source[0]), nid, links[slot["link"]].type))
    lines += [f"  n{a} -->|{_mermaid_text(kind)}| n{b}" for a, b, kind in edges]
    partgen = [f"n{nid}" for nid, n in sorted(nodes.items()) if str(n["type"]).startswith("PartGen")]
    if partgen:
        lines.append("  classDef partgen fill:#e8f0fe,stroke:#3f6fb5")
        lines.append(f"  class {','.join(partgen)} partgen")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# README: workflow walkthroughs and the node reference


def _notes_in_reading_order(workflow: dict) -> list[dict]:
    notes = [n for n in workflow["nodes"] if n.get("type") in NOTE_TYPES]
    return sorted(notes, key=lambda n: (n.get("pos", [0, 0])[0], n.get("pos", [0, 0])[1]))


def walkthrough(ui_file: Path, workflow: dict, object_info: Optional[dict] = None, repo_root: Optional[Path] = None,
                seen_notes: Optional[dict[str, str]] = None) -> str:
    """One workflow's README section: title, files, Mermaid graph, then its notes in reading order.
    ``seen_notes`` maps note texts already printed to the title of the walkthrough that printed them;
    a note repeated across workflows (e.g. the models table) is printed once and referred to after."""
    meta = _walkthrough(workflow)
    title = meta.get("title") or ui_file.stem.replace("_", " ")
    rel = ui_file.relative_to(repo_root).as_posix() if repo_root else ui_file.name
    twin = api_twin_path(ui_file, workflow)
    twin_rel = twin.relative_to(repo_root).as_posix() if repo_root else twin.name
    out = [f"### {title}", "", f"`{rel}` (API format: `{twin_rel}`)", ""]
    if required_host(workflow):
        out += [f"Needs ComfyUI {required_host(workflow)} or newer; its API twin is generated from that "
                "version's node definitions.", ""]
    if meta.get("summary"):
        out += [meta["summary"], ""]
    out += ["```mermaid", mermaid(workflow, object_info).rstrip("\n"), "```", ""]
    seen = {} if seen_notes is None else seen_notes
    for note in _notes_in_reading_order(workflow):
        text = str((note.get("widgets_values") or [""])[0]).strip()
        heading = note.get("title")
        if text in seen:
            text = f"As in *{seen[text]}* above."
        else:
            seen[text] = title
        out += [f"**{heading}.** {text}" if heading else text, ""]
    return "\n".join(out)


def workflows_section(folder: Path, object_info: Optional[dict] = None, repo_root: Optional[Path] = None) -> str:
    seen: dict[str, str] = {}
    parts = []
    for ui_file in ui_workflow_files(folder):
        parts.append(walkthrough(ui_file, json.loads(ui_file.read_text()), object_info, repo_root, seen))
    return "\n".join(parts)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _kind(spec: list) -> str:
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else str(kind)


def _setting(name: str, spec: list) -> str:
    """Default, range or options of a widget input, for the reference table."""
    if not is_widget(spec):
        return ""
    options = _spec_options(spec)
    choices = spec[0] if isinstance(spec[0], list) else options.get("options")
    parts = []
    if choices is not None:
        if name in _FILE_LIST_INPUTS or any(options.get(f) for f in (*UPLOAD_FLAGS, "file_upload")):
            parts.append("files found on disk")
        else:
            parts.append(" / ".join(f"`{c}`" for c in choices))
    if "default" in options and options["default"] != "":
        parts.append(f"default `{options['default']}`")
    if "min" in options or "max" in options:
        parts.append(f"{options.get('min', '')}..{options.get('max', '')}")
    return "; ".join(parts)


def node_reference(object_info: dict, prefix: str = "PartGen") -> str:
    """Markdown reference of every node whose id starts with ``prefix``: an overview table, then
    each node's description, inputs (type, setting, tooltip) and outputs."""
    ours = [(name, info) for name, info in object_info.items() if name.startswith(prefix)]
    out = ["| node | id | category | inputs | outputs |", "|---|---|---|---|---|"]
    for name, info in ours:
        inputs = [f"{n}{'' if s == 'required' else '?'}" for s in ("required", "optional") for n, _ in ordered_inputs(info, s)]
        outputs = [f"{n} `{t}`" for n, t in zip(info.get("output_name", []), info.get("output", []))]
        out.append(f"| {_cell(info.get('display_name', name))} | `{name}` | {_cell(info.get('category', ''))} | "
                   f"{_cell(', '.join(inputs))} | {_cell(', '.join(outputs)) or '(output node)'} |")
    out += ["", "`?` marks an optional input.", ""]
    for name, info in ours:
        out += [f"#### {info.get('display_name', name)} (`{name}`)", ""]
        if info.get("description"):
            out += [info["description"].strip(), ""]
        out += ["| input | type | setting | what it does |", "|---|---|---|---|"]
        for section in ("required", "optional"):
            for input_name, spec in ordered_inputs(info, section):
                optional = " (optional)" if section == "optional" else ""
                out.append(f"| {input_name}{optional} | `{_kind(spec)}` | {_cell(_setting(input_name, spec))} | "
                           f"{_cell(_spec_options(spec).get('tooltip', ''))} |")
        tooltips = info.get("output_tooltips") or []
        lists = info.get("output_is_list") or []
        rows = [f"| {n} | `{t}`{' (list)' if i < len(lists) and lists[i] else ''} | "
                f"{_cell(tooltips[i] if i < len(tooltips) and tooltips[i] else '')} |"
                for i, (n, t) in enumerate(zip(info.get("output_name", []), info.get("output", [])))]
        if rows:
            out += ["", "| output | type | what it is |", "|---|---|---|", *rows]
        if info.get("output_node"):
            out += ["", "Output node: it runs whenever the workflow is queued."]
        out.append("")
    return "\n".join(out)


def _markers(block: str) -> tuple[str, str]:
    return (f"<!-- BEGIN GENERATED {block}: {SYNC_COMMAND} rewrites this block; do not edit by hand -->",
            f"<!-- END GENERATED {block} -->")


def replace_block(text: str, block: str, content: str) -> str:
    """``text`` with the generated ``block`` between its markers replaced by ``content``."""
    begin, end = _markers(block)
    pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise WorkflowFormatError(f"the README has no generated block {block!r}; add the two lines\n{begin}\n{end}")
    return pattern.sub(lambda _: f"{begin}\n\n{content.strip()}\n\n{end}", text, count=1)


def render_readme(readme: str, workflows_folder: Path, object_info: dict, repo_root: Path) -> str:
    """The README with its generated blocks (workflow walkthroughs, node reference) brought up to date."""
    from .readme_status import status_section

    readme = replace_block(readme, "status", status_section(name for name in object_info if name.startswith("PartGen")))
    readme = replace_block(readme, "workflows", workflows_section(workflows_folder, object_info, repo_root))
    return replace_block(readme, "node-reference", node_reference(object_info))


# ------------------------------------------------------------------------------------------------
# Command line


def sync(repo_root: Path, object_info: dict, check: bool = False,
         host_object_info: Optional[dict[str, dict]] = None) -> list[str]:
    """Bring the UI files' widget values up to the node definitions (defaults for inputs added since),
    regenerate ``example_workflows/api/*_api.json`` and the README's generated blocks; return what was
    (or, with ``check``, would be) changed.

    ``object_info`` is the oldest supported host's; the README's node reference and most twins come from
    it. A workflow whose ``min_comfyui`` names a newer host is converted with that host's definitions,
    ``host_object_info[version]`` (its core nodes do not exist on the oldest host)."""
    folder = repo_root / EXAMPLE_FOLDER
    targets: list[tuple[Path, str]] = []
    changed = []
    for ui_file in ui_workflow_files(folder):
        workflow = json.loads(ui_file.read_text())
        needed = required_host(workflow)
        info = object_info
        if needed is not None:
            info = (host_object_info or {}).get(needed)
            if info is None:
                raise WorkflowFormatError(
                    f"{ui_file.name} needs ComfyUI {needed} (extra.partgen.min_comfyui): pass that host's "
                    f"/object_info (tools/sync_workflows.py starts it when the test harness knows it)")
        workflow = complete_widget_values(workflow, info)
        named = ui_file.with_name(template_file_name(_walkthrough(workflow).get("title") or ui_file.stem))
        if named != ui_file:  # the template browser shows the file name: it follows the title
            changed.append(f"{ui_file.relative_to(repo_root).as_posix()} -> {named.name}")
            if not check:
                for old_path, new_path in ((ui_file, named), (ui_file.with_suffix(".jpg"), named.with_suffix(".jpg"))):
                    if old_path.is_file():
                        old_path.replace(new_path)
                ui_file = named
        targets.append((ui_file, dump_ui(workflow)))
        targets.append((api_twin_path(ui_file, workflow), dump_api(ui_to_api(workflow, info))))
    readme = repo_root / "README.md"
    targets.append((readme, render_readme(readme.read_text(), folder, object_info, repo_root)))
    for path, text in targets:
        if not path.is_file() or path.read_text() != text:
            changed.append(path.relative_to(repo_root).as_posix())
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return changed


def load_object_info(source: str) -> dict:
    """``/object_info`` from a file or a running server's URL (``http://127.0.0.1:8188``)."""
    if source.startswith(("http://", "https://")):
        import urllib.request

        with urllib.request.urlopen(source.rstrip("/") + "/object_info", timeout=60) as response:
            return json.loads(response.read())
    return json.loads(Path(source).read_text())


def parse_host_object_info(specs: Iterable[str]) -> dict[str, dict]:
    """``["0.30.0=info.json", ...]`` (``--host-object-info``) as {version: /object_info}."""
    out = {}
    for spec in specs:
        version, sep, source = spec.partition("=")
        if not sep or not source:
            raise WorkflowFormatError(f"--host-object-info {spec!r}: write it as VERSION=FILE_OR_URL, e.g. 0.30.0=info.json")
        _version_key(version)
        out[version] = load_object_info(source)
    return out


def main(argv: Optional[Iterable[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m partgen_tools.workflow_format",
        description="Convert a UI-format ComfyUI workflow to API format, draw it as Mermaid, or regenerate this "
                    f"repository's API twins and README blocks ({SYNC_COMMAND} does that against a ComfyUI it starts).")
    parser.add_argument("--object-info", required=True, help="a saved /object_info JSON file, or a server URL")
    parser.add_argument("--host-object-info", action="append", default=[], metavar="VERSION=SOURCE",
                        help="a newer host's /object_info (file or URL), for workflows whose "
                             "extra.partgen.min_comfyui names that version; repeatable")
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="print the API format of a UI workflow")
    convert.add_argument("workflow", type=Path)
    draw = sub.add_parser("mermaid", help="print a UI workflow as a Mermaid flowchart")
    draw.add_argument("workflow", type=Path)
    update = sub.add_parser("sync", help="rewrite example_workflows/api/*_api.json and the README's generated blocks")
    update.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    update.add_argument("--check", action="store_true", help="only report what is out of date (exit 1 if anything)")
    args = parser.parse_args(None if argv is None else list(argv))
    object_info = load_object_info(args.object_info)
    try:
        host_object_info = parse_host_object_info(args.host_object_info)
        if args.command == "convert":
            sys.stdout.write(dump_api(ui_to_api(json.loads(args.workflow.read_text()), object_info)))
        elif args.command == "mermaid":
            sys.stdout.write(mermaid(json.loads(args.workflow.read_text()), object_info))
        else:
            changed = sync(args.repo.resolve(), object_info, check=args.check, host_object_info=host_object_info)
            verb = "out of date" if args.check else "rewritten"
            print("\n".join(f"{verb}: {c}" for c in changed) or "everything is up to date")
            return 1 if args.check and changed else 0
    except WorkflowFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
