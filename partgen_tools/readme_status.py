"""The README's status list, derived from the nodes that exist, so it cannot claim what is not there.

Each method stage names the node ids that implement it; a stage is listed as available only when all
of its nodes are registered, and as not available yet otherwise. Every registered PartGen node must
belong to a stage or to :data:`SUPPORT_NODES`, so a new node forces its author to say where it fits
(``tests/test_readme_status.py``). The node ids come from ComfyUI's ``/object_info`` (the README
sync) or from the node sources (:func:`node_ids_in_sources`, the tier-1 test): the same set.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True)
class MethodStage:
    method: str
    description: str
    node_ids: tuple[str, ...]


STAGES: tuple[MethodStage, ...] = (
    MethodStage("PartGen", "multi-view generation (Zero123++ v1.1/v1.2: image → 6 views with cameras)",
                ("PartGenLoadMultiViewModel", "PartGenMultiView")),
    MethodStage("PartGen", "multi-view part segmentation (PartGen's colour-coded multi-sample diffusion, SAM 2.1 "
                           "points tracked around the views, SAM 3 by part names) and part selection",
                ("PartGenLoadSegmenter", "PartGenSegment", "PartGenSelectParts")),
    MethodStage("PartGen", "part completion (PartGen's contextual completer, a training-free Zero123++ variant, "
                           "the no-completion baseline)", ("PartGenLoadCompleter", "PartGenCompleteParts")),
    MethodStage("PartGen", "text-guided part editing", ("PartGenEditPart",)),
    MethodStage("PartGen", "reconstruction (InstantMesh mesh and NeRF variants, batched over parts)",
                ("PartGenLoadReconstructionModel", "PartGenReconstruct")),
    MethodStage("PartGen", "an existing 3D asset as input (rendered at the multi-view cameras)", ("PartGenRenderViews",)),
    MethodStage("PartGen", "export (one GLB scene with a named node per part, manifest, per-part files)",
                ("PartGenSaveParts",)),
    MethodStage("MMPart", "a VLM writes one isolation prompt per named part", ("PartGenLoadVLM", "PartGenPlanParts")),
    MethodStage("MMPart", "the plan from an operator-configured chat endpoint or from ComfyUI's own TextGenerate",
                ("PartGenVLMEndpoint", "PartGenPlanPrompt", "PartGenParsePlan")),
    MethodStage("MMPart", "each part isolated by an image-edit model, then given Zero123++ views",
                ("PartGenCollectIsolatedParts",)),
    MethodStage("MMPart", "parts placed relative to each other as in the input image", ("PartGenPlaceParts",)),
)

# Registered nodes that serve every method rather than one stage.
SUPPORT_NODES = ("PartGenPartsToMesh", "PartGenMeshToParts", "PartGenLoadParts")
# Nodes that exist only to report a problem (registered when a stage fails to import).
DIAGNOSTIC_NODES = ("PartGenLoadReport",)


def unplaced_nodes(node_ids: Iterable[str]) -> list[str]:
    """Registered PartGen nodes that no stage and no support list names."""
    known = {n for stage in STAGES for n in stage.node_ids} | set(SUPPORT_NODES) | set(DIAGNOSTIC_NODES)
    return sorted(n for n in node_ids if n.startswith("PartGen") and n not in known)


def status_section(node_ids: Iterable[str]) -> str:
    """The status list as markdown: per method, the stages whose nodes all exist and those that do not."""
    present = set(node_ids)
    lines = []
    for method in dict.fromkeys(stage.method for stage in STAGES):
        stages = [stage for stage in STAGES if stage.method == method]
        done = [s for s in stages if all(n in present for n in s.node_ids)]
        missing = [s for s in stages if s not in done]
        if not missing:
            lines.append(f"- **{method}**: every stage is available: " + "; ".join(s.description for s in done) + ".")
        elif not done:
            lines.append(f"- **{method}**: not available yet; planned: " + "; ".join(s.description for s in missing) + ".")
        else:
            lines.append(f"- **{method}**: available: " + "; ".join(s.description for s in done)
                         + ". Not available yet: " + "; ".join(s.description for s in missing) + ".")
    return "\n".join(lines)


def node_ids_in_sources(nodes_folder: Path) -> list[str]:
    """The literal ``node_id="PartGen..."`` of every schema in the node modules (diagnostic ones left out)."""
    found = []
    for path in sorted(Path(nodes_folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "node_id" and isinstance(node.value, ast.Constant):
                if str(node.value.value).startswith("PartGen") and node.value.value not in DIAGNOSTIC_NODES:
                    found.append(str(node.value.value))
    return found
