"""ComfyUI nodes of comfyui-partgen: thin wrappers over ``partgen_models``, one module per stage.

Only this package imports ComfyUI. ``node_classes()`` imports the stage modules on demand so that a
broken optional dependency of one stage cannot take the other nodes down.
"""

from __future__ import annotations

import importlib
import logging

logger = logging.getLogger(__name__)

STAGE_MODULES = ("multiview", "segmentation", "completion", "reconstruction", "export", "interop", "rendering", "planning",
                 "mmpart")


def node_classes() -> list[type]:
    classes: list[type] = []
    for name in STAGE_MODULES:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except Exception:  # one stage failing to import must not hide the others
            logger.exception("comfyui-partgen: the %s nodes could not be loaded", name)
            continue
        classes.extend(module.NODES)
    return classes
