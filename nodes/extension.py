"""The ComfyExtension that registers the pack's model folder and nodes."""

from comfy_api.latest import ComfyExtension

from . import node_classes
from .comfy_runtime import register_model_folder


class PartGenExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_model_folder()

    async def get_node_list(self) -> list:
        return node_classes()
