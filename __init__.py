"""comfyui-partgen: part-aware 3D generation for ComfyUI (PartGen and MMPart); the README's status lists the stages.

ComfyUI calls ``comfy_entrypoint``; importing this file has no side effects and needs no ComfyUI.
"""


async def comfy_entrypoint():
    from .nodes.extension import PartGenExtension

    return PartGenExtension()
