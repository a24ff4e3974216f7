"""What the running ComfyUI's node API offers beyond the oldest host we support (0.3.75).

The pack runs on 0.3.75 and on current releases (0.30). Newer schema fields and socket types are used
only where the host has them, found by looking at its ``comfy_api`` (never by version numbers), so
the same node ids and saved workflows work on both: a field an older host lacks is left out of the
schema there, and a socket type it lacks is left off the node.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from comfy_api.latest import io


def has_file3d() -> bool:
    """0.30+: ``FILE_3D*`` sockets (``Types.File3D``), which core Preview3D, SaveGLB and Load3D use."""
    return hasattr(io, "File3DGLB") and hasattr(io, "File3DAny")


def file3d_types() -> list[Any]:
    """The file sockets a PartGen input accepts from core 3D nodes: what PartGen Load Parts reads
    (GLB, glTF, OBJ) and the generic one Load3D outputs. Empty where the host has none."""
    if not has_file3d():
        return []
    return [io.File3DAny, io.File3DGLB, io.File3DGLTF, io.File3DOBJ]


def advanced() -> dict[str, bool]:
    """Keyword arguments that fold an input under the node's "advanced" section (0.30+), else none."""
    return {"advanced": True} if "advanced" in inspect.signature(io.Input.__init__).parameters else {}


def search_aliases(*aliases: str) -> dict[str, list[str]]:
    """Keyword arguments for ``io.Schema``: words the node search also finds the node by (0.30+)."""
    fields = {f.name for f in dataclasses.fields(io.Schema)} if dataclasses.is_dataclass(io.Schema) else set()
    return {"search_aliases": list(aliases)} if "search_aliases" in fields else {}
