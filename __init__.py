"""comfyui-partgen: part-aware 3D generation for ComfyUI (PartGen and MMPart pipelines)."""

from comfy_api.latest import ComfyExtension


class PartGenExtension(ComfyExtension):
    async def on_load(self) -> None:
        from .nodes.comfy_runtime import register_model_folder

        register_model_folder()

    async def get_node_list(self) -> list:
        from .nodes import node_classes

        return node_classes()


async def comfy_entrypoint() -> PartGenExtension:
    return PartGenExtension()
