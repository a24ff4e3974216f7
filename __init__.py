"""comfyui-partgen: part-aware 3D generation for ComfyUI; the README's status lists which methods exist.

ComfyUI calls ``comfy_entrypoint``; importing this file has no side effects and needs no ComfyUI.
"""


async def comfy_entrypoint():
    from .nodes.extension import PartGenExtension

    return PartGenExtension()
