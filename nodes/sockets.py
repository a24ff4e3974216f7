"""The pack's typed sockets, declared once so the editor refuses wrong wiring."""

from comfy_api.latest import io

MultiViewModel = io.Custom("PARTGEN_MULTIVIEW_MODEL")
Views = io.Custom("PARTGEN_VIEWS")
