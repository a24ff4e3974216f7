"""MMPart planner nodes: load a VLM (local or an operator-configured endpoint), plan the parts, or build
the prompt for ComfyUI's own TextGenerate and parse its reply back into a plan."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from comfy_api.latest import io

import comfy.model_management as mm
import folder_paths

from ..partgen_models.planning.endpoint import (
    ENDPOINTS_ENV,
    ENDPOINTS_FILE,
    EndpointConfigError,
    EndpointVLM,
    find_endpoint,
    load_endpoints,
)
from ..partgen_models.planning.local_vlm import DEFAULT_VLM, VLM_CHOICES, list_local_vlms, load_local_vlm, resolve_vlm_folder
from ..partgen_models.planning.plan import MAX_PARTS, PartPlan
from ..partgen_models.planning.planner import (
    MAX_IMAGE_SIDE,
    MAX_NEW_TOKENS,
    ChatOptions,
    image_size_of,
    plan_from_reply,
    plan_parts,
    plan_preview,
)
from ..partgen_models.planning.request import UNUSABLE_REPLY_POLICIES, PlanRequest, combined_prompt
from ..partgen_models.runtime import Runtime
from . import sockets
from .comfy_runtime import PRECISIONS, ModelHandle, comfy_runtime, download_progress, model_search_dirs, resolve_dtype

logger = logging.getLogger(__name__)

NO_ENDPOINT = "(no endpoint configured)"
_DEFAULTS = ChatOptions()


def endpoints_file() -> Path:
    """At the top of ComfyUI's user folder, which the browser's userdata API cannot write (it is
    confined to user/<name>/), so only the server's operator configures where images may go."""
    return Path(folder_paths.get_user_directory()) / ENDPOINTS_FILE


def _endpoint_names() -> list[str]:
    try:
        return list(load_endpoints(endpoints_file())) or [NO_ENDPOINT]
    except EndpointConfigError as error:  # a broken config must not take the node list down; execute reports it
        logger.warning("comfyui-partgen: %s", error)
        return [NO_ENDPOINT]


@dataclass(frozen=True)
class EndpointHandle:
    """``PARTGEN_VLM`` for an endpoint: only its configured name; URL and key are looked up when used."""

    name: str


def _plan_outputs(plan: PartPlan) -> io.NodeOutput:
    return io.NodeOutput(plan, plan.prompts, plan.names, plan_preview(plan))


def _plan_output_sockets() -> list:
    return [
        sockets.PartPlan.Output(display_name="plan", tooltip="To PartGen Collect Isolated Parts and PartGen Place Parts."),
        io.String.Output(display_name="prompts", is_output_list=True,
                         tooltip="One isolation prompt per part, as a list: an edit-model text encoder connected here runs "
                                 "once per part (TextEncodeQwenImageEditPlus, a FLUX.1 Kontext CLIPTextEncode, the GPT-Image "
                                 "node)."),
        io.String.Output(display_name="names", is_output_list=True, tooltip="The part names, one per part, in plan order."),
        io.String.Output(display_name="preview", tooltip="The plan as readable text: connect Preview as Text."),
    ]


def _request_inputs() -> list:
    return [
        io.String.Input("parts", default="", multiline=False,
                        tooltip=f"The parts to isolate, comma-separated ('hat, head, body, horse'); at most {MAX_PARTS}. Each "
                                "part costs one edit, one multi-view grid and one reconstruction downstream. Empty: the "
                                "VLM proposes up to max_parts parts."),
        io.String.Input("wishes", default="", multiline=True,
                        tooltip="How hidden areas should look once a part is isolated ('the head under the hat is bald'). "
                                "Empty: completed plausibly, as the part's pose implies. At most 4000 characters."),
        io.Int.Input("max_parts", default=8, min=1, max=MAX_PARTS,
                     tooltip="Only when 'parts' is empty: the most parts the VLM may propose. Each part costs one edit, "
                             "one multi-view grid and one reconstruction downstream."),
    ]


def _fallback_input():
    return io.Combo.Input(
        "on_unusable_reply", options=list(UNUSABLE_REPLY_POLICIES), default="error",
        tooltip="error: stop with a message saying what was wrong with the reply. template (fallback): write a fixed "
                "isolation prompt per named part (keep only this part as in the image, hidden areas as in 'wishes', white "
                "background, same framing) when the reply stays unusable; it describes nothing the VLM saw. Needs 'parts'.",
    )


class LoadVLM(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = list(VLM_CHOICES) + [n for n in list_local_vlms(model_search_dirs()) if n not in VLM_CHOICES]
        return io.Schema(
            node_id="PartGenLoadVLM",
            display_name="PartGen Load VLM",
            category="PartGen/loaders",
            description=(
                "A local vision-language model (transformers Qwen3-VL, Apache-2.0) for PartGen Plan Parts (MMPart's "
                "planner). The chosen model is downloaded into models/partgen/vlm/<name>/ on first use "
                "(PARTGEN_NO_DOWNLOAD=1 forbids it; then the error names the files and the folder). Other Qwen3-VL "
                "checkpoint folders placed in models/partgen/vlm/ are listed too. Loaded on first use and managed by "
                "ComfyUI like its own models."
            ),
            inputs=[
                io.Combo.Input("model", options=choices, default=DEFAULT_VLM,
                               tooltip="Qwen3-VL-2B/4B/8B-Instruct: about 5 / 10 / 19 GB of VRAM in bf16 (twice that in "
                                       "fp32), plus about 0.15 MB per prompt or reply token (4B). 4B is the default; 2B fits "
                                       "6-8 GB cards but keeps to the JSON format less often; 8B for 24 GB cards."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                               tooltip="auto: bf16/fp16 on a GPU, fp32 on CPU. fp32 doubles the VRAM of the weights."),
            ],
            outputs=[sockets.VLM.Output(display_name="vlm")],
        )

    @classmethod
    def execute(cls, model: str, precision: str) -> io.NodeOutput:
        dtype = resolve_dtype(precision)
        folder = resolve_vlm_folder(model, model_search_dirs(), download_progress())
        return io.NodeOutput(ModelHandle(name=model, dtype=dtype, build=lambda: load_local_vlm(folder, dtype)))


class VLMEndpoint(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        names = _endpoint_names()
        return io.Schema(
            node_id="PartGenVLMEndpoint",
            display_name="PartGen VLM Endpoint",
            category="PartGen/loaders",
            description=(
                "An OpenAI-compatible chat endpoint (OpenAI, Ollama, LM Studio, vLLM, llama.cpp server) as the planner's "
                "VLM. The image is sent to it. Only endpoints the server's operator configured are offered, so a shared "
                f"workflow cannot send your images elsewhere, and keys never live in workflows: the operator lists them in "
                f"user/{ENDPOINTS_FILE} (at the top of ComfyUI's user folder) or the {ENDPOINTS_ENV} environment "
                "variable, as JSON {\"name\": {\"base_url\": ..., \"model\": ..., \"api_key_env\": \"NAME_OF_KEY_VARIABLE\"}}, "
                "and restarts ComfyUI."
            ),
            inputs=[
                io.Combo.Input("endpoint", options=names, default=names[0],
                               tooltip="A configured endpoint's name. No VRAM here; the time is the server's answer time "
                                       "(bounded by the endpoint's timeout_s)."),
            ],
            outputs=[sockets.VLM.Output(display_name="vlm")],
        )

    @classmethod
    def execute(cls, endpoint: str) -> io.NodeOutput:
        find_endpoint(endpoint, endpoints_file())  # fail here, at the loader, when it is not configured
        return io.NodeOutput(EndpointHandle(endpoint))


def _host_runtime() -> Runtime:
    """Progress and interrupts for a VLM that is not a local model (nothing to load)."""
    return Runtime(check_interrupt=mm.throw_exception_if_processing_interrupted)


class PlanParts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenPlanParts",
            display_name="PartGen Plan Parts",
            category="PartGen/mmpart",
            description=(
                "MMPart's planner (§3.2): the VLM reads the image, your part list and your wishes about hidden areas, and "
                "writes one isolation prompt per part for an image-edit model (keep only this part, as posed and lit in "
                "the image, hidden areas as you asked, plain white background, same framing). The reply must be JSON "
                "naming exactly your parts; formatting slips are repaired, anything else is asked again once, then it "
                "is an error that says what was wrong (or, with on_unusable_reply = template, a named fallback: fixed template "
                "prompts for the named parts). At temperature 0 the same inputs give the same plan."
            ),
            inputs=[
                sockets.VLM.Input("vlm", tooltip="From PartGen Load VLM or PartGen VLM Endpoint."),
                io.Image.Input("image", tooltip="The object image (one image; the first of a batch is refused as ambiguous)."),
                *_request_inputs(),
                io.Float.Input("temperature", default=_DEFAULTS.temperature, min=0.0, max=2.0, step=0.05,
                               tooltip="0: greedy, the same plan every time. Above 0: sampled with the seed, for variants."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                             tooltip="Sampling seed (used when temperature > 0; endpoints receive it too)."),
                io.Int.Input("max_new_tokens", default=_DEFAULTS.max_new_tokens, min=16, max=MAX_NEW_TOKENS,
                             tooltip="Reply budget: about 150 tokens per part. Time grows linearly; local KV cache about "
                                     "0.15 MB per token (4B, bf16)."),
                io.Int.Input("image_max_side", default=_DEFAULTS.image_max_side, min=64, max=MAX_IMAGE_SIDE,
                             tooltip="The image is scaled down to this longer side before the VLM sees it. Qwen3-VL spends "
                                     "one token per 32x32 pixels (768: at most 576 image tokens); time and memory grow with that count."),
                _fallback_input(),
            ],
            outputs=_plan_output_sockets(),
        )

    @classmethod
    def execute(cls, vlm, image, parts, wishes, max_parts, temperature, seed, max_new_tokens, image_max_side,
                on_unusable_reply="error") -> io.NodeOutput:
        request = PlanRequest.from_text(parts, wishes, max_parts, on_unusable_reply)
        options = ChatOptions(temperature, seed, max_new_tokens, image_max_side)
        if isinstance(vlm, EndpointHandle):
            model, runtime = EndpointVLM(find_endpoint(vlm.name, endpoints_file())), _host_runtime()
        else:
            patcher = vlm.patcher()
            model, runtime = patcher.model, comfy_runtime(patcher)
        return _plan_outputs(plan_parts(model, image, request, options, runtime))


class PlanPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenPlanPrompt",
            display_name="PartGen Plan Prompt",
            category="PartGen/mmpart",
            description=(
                "The planner's instructions and your request as one prompt, for a text generator you already run, such as "
                "ComfyUI's core Generate Text (TextGenerate) with a Qwen3-VL text encoder and the same image. Connect its "
                "generated text to PartGen Parse Plan with the same parts settings."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The object image; only its size is used here (the prompt states it)."),
                *_request_inputs(),
            ],
            outputs=[io.String.Output(display_name="prompt", tooltip="To TextGenerate's prompt (with the same image).")],
        )

    @classmethod
    def execute(cls, image, parts, wishes, max_parts) -> io.NodeOutput:
        return io.NodeOutput(combined_prompt(PlanRequest.from_text(parts, wishes, max_parts), image_size_of(image)))


class ParsePlan(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="PartGenParsePlan",
            display_name="PartGen Parse Plan",
            category="PartGen/mmpart",
            description=(
                "A text generator's reply to PartGen Plan Prompt → the part plan, validated like PartGen Plan Parts' "
                "(formatting slips repaired; wrong, missing or repeated part names are an error that says how to fix it, or "
                "with on_unusable_reply = template the named fallback of fixed template prompts)."
            ),
            inputs=[
                io.String.Input("reply", force_input=True, tooltip="The generated text (TextGenerate's generated_text)."),
                io.Image.Input("image", tooltip="The same object image the prompt was built for."),
                *_request_inputs(),
                _fallback_input(),
            ],
            outputs=_plan_output_sockets(),
        )

    @classmethod
    def execute(cls, reply, image, parts, wishes, max_parts, on_unusable_reply="error") -> io.NodeOutput:
        request = PlanRequest.from_text(parts, wishes, max_parts, on_unusable_reply)
        return _plan_outputs(plan_from_reply(reply, image, request, "text"))


NODES = [LoadVLM, VLMEndpoint, PlanParts, PlanPrompt, ParsePlan]
