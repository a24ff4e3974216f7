"""Tooling around the pack that is not model code: ComfyUI workflow conversion and README generation
(``workflow_format``) and the HTTP queue client (``python -m partgen_tools.queue_client``)."""
