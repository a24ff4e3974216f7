"""MMPart part planner (tier 1): request parsing, reply repair and validation, the re-ask path on
canned replies, and the local Qwen3-VL through its real loader on a tiny checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from partgen_models.planning import (
    MAX_PARTS,
    SYSTEM_PROMPT,
    ChatOptions,
    PlanReplyError,
    PlanRequest,
    PlanRequestError,
    combined_prompt,
    parse_part_list,
    parse_plan_reply,
    plan_parts,
    plan_preview,
)
from partgen_models.planning.local_vlm import load_local_vlm, resolve_vlm_folder
from partgen_models.runtime import Runtime
from partgen_models.weights import VLM_MODELS, WeightsError

IMAGE = torch.rand(1, 48, 64, 3, generator=torch.Generator().manual_seed(0))
REQUEST = PlanRequest.from_text("hat, head, body, horse", "the head under the hat is bald")


def _reply(names, **extra) -> str:
    return json.dumps({"parts": [{"name": n, "prompt": f"Keep only the {n}; plain white background.", **extra} for n in names]})


class CannedVLM:
    """A ChatModel that answers from a list and records what it was asked."""

    name = "canned"

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.calls: list[list[tuple[str, str]]] = []

    def chat(self, system, messages, image, options, runtime):
        assert system == SYSTEM_PROMPT
        self.calls.append(list(messages))
        return self.replies.pop(0)


# --- the user's request ---------------------------------------------------------------------------

def test_part_list_is_split_and_trimmed():
    assert parse_part_list(" hat , head;body\n horse\n") == ("hat", "head", "body", "horse")
    assert parse_part_list("") == ()


def test_duplicate_part_name_is_refused():
    with pytest.raises(PlanRequestError, match="'parts' names 'Hat' twice"):
        parse_part_list("hat, Hat")


def test_more_than_16_parts_are_refused():
    with pytest.raises(PlanRequestError, match=f"lists 17 parts; at most {MAX_PARTS}"):
        parse_part_list(", ".join(f"p{i}" for i in range(17)))


def test_overlong_part_name_is_refused():
    with pytest.raises(PlanRequestError, match="longer than 64 characters"):
        parse_part_list("x" * 65)


@pytest.mark.parametrize("max_parts", [0, 17, 2.5])
def test_max_parts_is_bounded(max_parts):
    with pytest.raises(PlanRequestError, match="max_parts must be an integer within 1..16"):
        PlanRequest(max_parts=max_parts)


def test_overlong_wishes_are_refused():
    with pytest.raises(PlanRequestError, match="'wishes' is 4001 characters"):
        PlanRequest(wishes="x" * 4001)


@pytest.mark.parametrize("field,value,message", [
    ("temperature", float("nan"), "temperature must be a finite number"),
    ("temperature", 3.0, "temperature must be a finite number"),
    ("max_new_tokens", 8, "max_new_tokens must be within 16..8192"),
    ("image_max_side", 4096, "image_max_side must be within 64..2048"),
    ("seed", -1, "seed must be an integer"),
])
def test_chat_options_are_validated(field, value, message):
    with pytest.raises(PlanRequestError, match=message):
        ChatOptions(**{field: value})


def test_prompt_names_parts_wishes_and_size():
    text = combined_prompt(REQUEST, (48, 64))
    assert text.startswith(SYSTEM_PROMPT)
    assert '"hat", "head", "body", "horse"' in text and "the head under the hat is bald" in text
    assert "64 x 48 pixels" in text
    proposing = combined_prompt(PlanRequest(max_parts=5), (48, 64))
    assert "at most 5" in proposing
    for requirement in ("white background", "pose", "lighting", "hidden", "same framing", "JSON"):
        assert requirement in SYSTEM_PROMPT


# --- replies ----------------------------------------------------------------------------------------

def test_clean_reply_becomes_plan_in_users_order_and_spelling():
    reply = json.dumps({"parts": [
        {"name": "HORSE", "prompt": "Keep the horse.", "note": ""},
        {"name": "body", "prompt": "Keep the body.", "note": ""},
        {"name": "head", "prompt": "Keep the head, bald.", "note": "the head under the hat is bald"},
        {"name": "hat", "prompt": "Keep the hat.", "note": ""},
    ]})
    plan = parse_plan_reply(reply, REQUEST, (48, 64), "vlm:test")
    assert plan.names == ["hat", "head", "body", "horse"]
    assert plan.parts[1].note == "the head under the hat is bald"
    assert plan.prompts[3] == "Keep the horse."
    assert plan.image_size == (48, 64) and plan.source == "vlm:test"
    preview = plan_preview(plan)
    assert "4 parts for a 64x48 image" in preview and "honours: the head under the hat is bald" in preview


@pytest.mark.parametrize("wrap", [
    lambda j: f"```json\n{j}\n```",
    lambda j: f"Here is the plan:\n{j}\nHope this helps!",
    lambda j: j.replace("}]}", "},]}"),  # trailing comma
    lambda j: json.dumps(json.loads(j)["parts"]),  # the bare list
    lambda j: "<think>the user wants four parts</think>" + j,
    lambda j: json.dumps({"objects": json.loads(j)["parts"]}),
])
def test_usual_formatting_slips_are_repaired(wrap):
    plan = parse_plan_reply(wrap(_reply(["hat", "head", "body", "horse"])), REQUEST, (48, 64), "t")
    assert plan.names == ["hat", "head", "body", "horse"]


@pytest.mark.parametrize("reply,problem", [
    ("", "the reply is empty"),
    ("I cannot help with that.", "the reply is not JSON"),
    ('{"parts": [{"name": "hat", "prompt": "Keep', "the reply is not JSON"),
    ('{"answer": 1}', 'the JSON has no "parts" list'),
    (_reply(["hat", "head", "body", "horse", "saddle"]), "'saddle', which is not among the requested parts"),
    (_reply(["hat", "head", "body"]), "no prompt for 'horse'"),
    (_reply(["hat", "hat", "head", "body", "horse"]), "names the part 'hat' twice"),
    (json.dumps({"parts": [{"name": "hat"}]}), "the part 'hat' has no isolation prompt"),
    (json.dumps({"parts": ["hat"]}), "part 1 of the reply is not an object"),
    (json.dumps({"parts": [{"prompt": "x"}]}), "part 1 of the reply has no name"),
    (_reply([f"p{i}" for i in range(17)]), "lists 17 parts; at most 16"),
])
def test_unusable_replies_name_the_problem(reply, problem):
    with pytest.raises(PlanReplyError) as caught:
        parse_plan_reply(reply, REQUEST, (48, 64), "t")
    assert problem in str(caught.value)
    assert caught.value.reply == reply


def test_proposed_parts_are_bounded_by_max_parts():
    request = PlanRequest(max_parts=2)
    assert parse_plan_reply(_reply(["seat", "legs"]), request, (8, 8), "t").names == ["seat", "legs"]
    with pytest.raises(PlanReplyError, match="lists 3 parts, more than max_parts = 2"):
        parse_plan_reply(_reply(["seat", "legs", "back"]), request, (8, 8), "t")
    with pytest.raises(PlanReplyError, match="lists no parts"):
        parse_plan_reply('{"parts": []}', request, (8, 8), "t")


def test_overlong_prompt_is_refused():
    with pytest.raises(PlanReplyError, match="longer than 4000 characters"):
        parse_plan_reply(json.dumps([{"name": "hat", "prompt": "x " * 2100}]), PlanRequest(("hat",)), (8, 8), "t")


# --- the planner: ask, re-ask once ------------------------------------------------------------------

def test_good_reply_is_used_at_once():
    vlm = CannedVLM(_reply(["hat", "head", "body", "horse"]))
    plan = plan_parts(vlm, IMAGE, REQUEST)
    assert plan.names == ["hat", "head", "body", "horse"] and plan.source == "vlm:canned"
    assert len(vlm.calls) == 1


def test_malformed_reply_is_reasked_once_with_the_problem():
    vlm = CannedVLM("Sure! hat, head, body and horse.", _reply(["hat", "head", "body", "horse"]))
    plan = plan_parts(vlm, IMAGE, REQUEST)
    assert plan.names == ["hat", "head", "body", "horse"]
    second = vlm.calls[1]
    assert [role for role, _ in second] == ["user", "assistant", "user"]
    assert second[1][1] == "Sure! hat, head, body and horse."
    assert "the reply is not JSON" in second[2][1] and "hat, head, body, horse" in second[2][1]


def test_two_unusable_replies_are_an_error_naming_the_problem():
    vlm = CannedVLM(_reply(["hat"]), _reply(["hat", "head", "body", "horse", "rider"]))
    with pytest.raises(PlanReplyError) as caught:
        plan_parts(vlm, IMAGE, REQUEST)
    message = str(caught.value)
    assert "'rider', which is not among the requested parts" in message
    assert "also when asked again" in message and "choose a larger VLM" in message


def test_image_batch_and_bad_values_are_refused():
    with pytest.raises(PlanRequestError, match="got a batch of 2"):
        plan_parts(CannedVLM(), torch.rand(2, 8, 8, 3), REQUEST)
    with pytest.raises(PlanRequestError, match=r"must be \[1,H,W,3\], got shape \(8, 8\)"):
        plan_parts(CannedVLM(), torch.rand(8, 8), REQUEST)
    with pytest.raises(PlanRequestError, match="NaN or infinite"):
        plan_parts(CannedVLM(), torch.full((1, 8, 8, 3), float("nan")), REQUEST)
    # 0..255 values: clamped, the VLM would have been shown a white image
    with pytest.raises(PlanRequestError, match=r"values from 0 to 255, but an IMAGE holds 0..1 \(8-bit values not divided"):
        plan_parts(CannedVLM(), torch.linspace(0, 255, 192).reshape(1, 8, 8, 3), REQUEST)


# --- the local Qwen3-VL on a tiny checkpoint --------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_vlm_root(tmp_path_factory) -> Path:
    from partgen_models.testing.tiny_vlm import write_tiny_qwen3_vl

    root = tmp_path_factory.mktemp("models")
    write_tiny_qwen3_vl(root / "vlm" / "Qwen3-VL-4B-Instruct")
    return root


def test_tiny_vlm_is_found_as_the_default_choice(tiny_vlm_root):
    folder = resolve_vlm_folder("Qwen3-VL-4B-Instruct", [tiny_vlm_root])
    assert folder == tiny_vlm_root / "vlm" / "Qwen3-VL-4B-Instruct"
    assert (folder / "model.safetensors.index.json").is_file()  # sharded like the release


def test_missing_vlm_without_downloads_names_files_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTGEN_NO_DOWNLOAD", "1")
    with pytest.raises(WeightsError) as caught:
        resolve_vlm_folder("Qwen3-VL-2B-Instruct", [tmp_path])
    message = str(caught.value)
    assert "https://huggingface.co/Qwen/Qwen3-VL-2B-Instruct" in message
    assert str(tmp_path / "vlm" / "Qwen3-VL-2B-Instruct") in message and "Apache-2.0" in message


def test_unknown_vlm_name_says_where_to_put_it(tmp_path):
    with pytest.raises(WeightsError, match="no planner VLM named 'my-vlm'.*vlm/my-vlm"):
        resolve_vlm_folder("my-vlm", [tmp_path])


def test_vlm_choices_are_the_three_qwen3_vl_sizes():
    assert list(VLM_MODELS) == ["Qwen3-VL-2B-Instruct", "Qwen3-VL-4B-Instruct", "Qwen3-VL-8B-Instruct"]
    assert all(m.folder == f"vlm/{n}" and m.license == "Apache-2.0" for n, m in VLM_MODELS.items())


def test_tiny_vlm_generates_deterministically_with_progress(tiny_vlm_root):
    vlm = load_local_vlm(tiny_vlm_root / "vlm" / "Qwen3-VL-4B-Instruct")
    assert vlm.name == "Qwen3-VL-4B-Instruct"
    steps = []
    runtime = Runtime(progress=lambda step, total, preview: steps.append((step, total)))
    options = ChatOptions(max_new_tokens=16)
    first = vlm.chat(SYSTEM_PROMPT, [("user", "hat, head")], IMAGE, options, runtime)
    assert isinstance(first, str)
    assert vlm.chat(SYSTEM_PROMPT, [("user", "hat, head")], IMAGE, options, runtime) == first  # greedy
    assert steps and all(total == 16 for _, total in steps) and steps[-1][0] <= 16
    sampled = ChatOptions(max_new_tokens=16, temperature=1.0, seed=7)
    a = vlm.chat(SYSTEM_PROMPT, [("user", "hat")], IMAGE, sampled, runtime)
    assert vlm.chat(SYSTEM_PROMPT, [("user", "hat")], IMAGE, sampled, runtime) == a  # same seed, same reply


def test_tiny_vlm_garbage_reply_goes_through_reask_to_a_clear_error(tiny_vlm_root):
    vlm = load_local_vlm(tiny_vlm_root / "vlm" / "Qwen3-VL-4B-Instruct")
    with pytest.raises(PlanReplyError, match="'Qwen3-VL-4B-Instruct' gave no usable part plan, also when asked again"):
        plan_parts(vlm, IMAGE, REQUEST, ChatOptions(max_new_tokens=16))


def test_interrupt_stops_generation(tiny_vlm_root):
    vlm = load_local_vlm(tiny_vlm_root / "vlm" / "Qwen3-VL-4B-Instruct")

    class Stop(Exception):
        pass

    def interrupt():
        raise Stop

    with pytest.raises(Stop):
        vlm.chat(SYSTEM_PROMPT, [("user", "hat")], IMAGE, ChatOptions(max_new_tokens=64), Runtime(check_interrupt=interrupt))


def test_missing_shard_is_named(tiny_vlm_root, tmp_path):
    folder = tmp_path / "vlm" / "Qwen3-VL-4B-Instruct"
    shutil.copytree(tiny_vlm_root / "vlm" / "Qwen3-VL-4B-Instruct", folder)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(WeightsError, match="lacks model-00002-of-00002.safetensors .* download was interrupted"):
        load_local_vlm(folder)


def test_other_model_type_is_refused(tiny_vlm_root, tmp_path):
    folder = tmp_path / "vlm" / "other"
    shutil.copytree(tiny_vlm_root / "vlm" / "Qwen3-VL-4B-Instruct", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, model_type="qwen2_5_vl")))
    with pytest.raises(WeightsError, match="holds a 'qwen2_5_vl' model; the planner loads a Qwen3-VL"):
        load_local_vlm(folder)


def test_mis_shaped_checkpoint_is_refused(tiny_vlm_root, tmp_path):
    folder = tmp_path / "vlm" / "wide"
    shutil.copytree(tiny_vlm_root / "vlm" / "Qwen3-VL-4B-Instruct", folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["intermediate_size"] = 48
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="is not a Qwen3-VL checkpoint|could not be loaded as a Qwen3-VL"):
        load_local_vlm(folder)


# --- ComfyUI's own text generation: prompt out, reply back ------------------------------------------

def test_round_trip_prompt_to_canned_reply_to_plan():
    from partgen_models.planning.planner import plan_from_reply

    request = PlanRequest.from_text("hat, head", "bald under the hat")
    prompt = combined_prompt(request, (48, 64))
    assert '"hat", "head"' in prompt and "bald under the hat" in prompt
    reply = "```json\n" + _reply(["head", "hat"]) + "\n```"  # what a chat model tends to send back
    plan = plan_from_reply(reply, IMAGE, request, "text")
    assert plan.names == ["hat", "head"] and plan.image_size == (48, 64) and plan.source == "text"


def test_unusable_generated_text_says_how_to_fix_it():
    from partgen_models.planning.planner import plan_from_reply

    with pytest.raises(PlanReplyError, match="not a usable part plan: the reply is not JSON .* sampling off"):
        plan_from_reply("a hat and a head", IMAGE, PlanRequest(("hat", "head")))


# --- the named fallback: template prompts -----------------------------------------------------------

def test_template_fallback_after_two_unusable_replies():
    request = PlanRequest.from_text("hat, head", "the head is bald", on_unusable_reply="template")
    plan = plan_parts(CannedVLM("no", "still no"), IMAGE, request)
    assert plan.names == ["hat", "head"] and plan.source.startswith("template (fallback; vlm:canned")
    assert "except the hat" in plan.prompts[0] and "white background" in plan.prompts[0]
    assert "as the user wishes: the head is bald" in plan.prompts[1] and plan.parts[1].note == "the head is bald"


def test_template_fallback_is_not_used_for_a_good_reply():
    request = PlanRequest.from_text("hat, head", on_unusable_reply="template")
    assert plan_parts(CannedVLM(_reply(["hat", "head"])), IMAGE, request).source == "vlm:canned"


def test_template_fallback_needs_names_and_a_known_policy():
    with pytest.raises(PlanRequestError, match="on_unusable_reply = template needs the part names"):
        PlanRequest(on_unusable_reply="template")
    with pytest.raises(PlanRequestError, match="on_unusable_reply must be one of error, template"):
        PlanRequest(("hat",), on_unusable_reply="guess")


def test_template_fallback_for_generated_text():
    from partgen_models.planning.planner import plan_from_reply

    request = PlanRequest.from_text("hat", on_unusable_reply="template")
    assert plan_from_reply("garbage", IMAGE, request).names == ["hat"]


# --- the remaining error messages ---------------------------------------------------------------------

def test_request_with_too_many_names_is_refused():
    with pytest.raises(PlanRequestError, match="at most 16 parts can be planned, got 17"):
        PlanRequest(tuple(f"p{i}" for i in range(17)))


def test_generated_text_must_be_text():
    from partgen_models.planning.planner import plan_from_reply

    with pytest.raises(PlanRequestError, match="the reply must be text .* got list"):
        plan_from_reply(["a"], IMAGE, REQUEST)


def test_template_plan_needs_names():
    from partgen_models.planning.planner import template_plan

    with pytest.raises(PlanRequestError, match="template prompts need the part names"):
        template_plan(PlanRequest(), (8, 8))


def test_overlong_name_in_reply_is_refused():
    with pytest.raises(PlanReplyError, match="part 1's name is longer than 64 characters"):
        parse_plan_reply(json.dumps([{"name": "x" * 65, "prompt": "p"}]), PlanRequest(), (8, 8), "t")


def test_no_models_folder_is_named():
    with pytest.raises(WeightsError, match="no models folder is configured"):
        resolve_vlm_folder("Qwen3-VL-4B-Instruct", [])


def _copy(tiny_vlm_root: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "vlm" / "copy"
    shutil.copytree(tiny_vlm_root / "vlm" / "Qwen3-VL-4B-Instruct", folder)
    return folder


def test_folder_without_weights_is_named(tiny_vlm_root, tmp_path):
    folder = _copy(tiny_vlm_root, tmp_path)
    (folder / "model.safetensors.index.json").unlink()
    with pytest.raises(WeightsError, match="has neither model.safetensors nor model.safetensors.index.json"):
        load_local_vlm(folder)


def test_unreadable_index_is_named(tiny_vlm_root, tmp_path):
    folder = _copy(tiny_vlm_root, tmp_path)
    (folder / "model.safetensors.index.json").write_text("{")
    with pytest.raises(WeightsError, match="is not a readable weights index"):
        load_local_vlm(folder)


def test_unreadable_config_is_named(tiny_vlm_root, tmp_path):
    folder = _copy(tiny_vlm_root, tmp_path)
    (folder / "config.json").write_text("not json")
    with pytest.raises(WeightsError, match="config.json is missing or unreadable"):
        load_local_vlm(folder)


def test_missing_processor_is_named(tiny_vlm_root, tmp_path):
    folder = _copy(tiny_vlm_root, tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        (folder / name).unlink()
    with pytest.raises(WeightsError, match="lacks a readable Qwen3-VL processor/tokenizer"):
        load_local_vlm(folder)


def test_missing_chat_template_is_named(tiny_vlm_root, tmp_path):
    folder = _copy(tiny_vlm_root, tmp_path)
    (folder / "chat_template.jinja").unlink()
    with pytest.raises(WeightsError, match="has no chat template"):
        load_local_vlm(folder)
