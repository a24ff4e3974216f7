"""A node that exists only when some of the pack's nodes failed to load, saying which and why.

Missing nodes are otherwise only a red box in a loaded workflow and a log line nobody reads: this
node shows up in the node list (search "PartGen") with the reason and the fix in its description,
and running it raises the same text.
"""

from __future__ import annotations

from comfy_api.latest import io


def load_report_node(failures) -> type:
    text = " ".join(f"({i + 1}) {failure.message}." for i, failure in enumerate(failures))
    stages = ", ".join(failure.stage for failure in failures)

    class LoadReport(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(
                node_id="PartGenLoadReport",
                display_name=f"PartGen: nodes that failed to load ({stages})",
                category="PartGen",
                description=f"Some PartGen nodes are missing from this ComfyUI. {text}",
                inputs=[],
                outputs=[],
                is_output_node=True,
            )

        @classmethod
        def execute(cls) -> io.NodeOutput:
            raise RuntimeError(f"Some PartGen nodes are missing from this ComfyUI. {text}")

    return LoadReport
