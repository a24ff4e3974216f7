"""comfyui-partgen's library: part-aware 3D generation stages in plain PyTorch.

Importing this package is cheap and never imports ComfyUI; each stage lives in its own
sub-package (``multiview``, later ``segmentation``, ``completion``, ``reconstruction``...).
"""

__version__ = "0.1.0"
