import json
import shutil

import pytest
import torch

from partgen_models.multiview import load_zero123plus
from partgen_models.multiview.catalog import list_multiview_models, resolve_multiview_model
from partgen_models.modules import build_on_meta
from partgen_models.testing import REAL_ZERO123PP_CONFIGS
from partgen_models.weights import WeightsError
from tiny_models import tiny_models_dir, tiny_zero123plus


def test_tiny_folder_loads_through_the_real_loader():
    model = tiny_zero123plus()
    assert model.name == "zero123plus-v1.2"
    assert model.layout.name == "zero123pp_v12"
    assert model.flavour.input_background == pytest.approx(127 / 255) and model.flavour.output_background == 0.5
    assert model.empty_prompt_embeds.shape == (1, 77, 32) and model.ramping.shape == (77, 1)
    assert not any(p.device.type == "meta" for p in model.parameters())
    assert not any(b.device.type == "meta" for b in model.buffers())
    index = json.loads((tiny_models_dir() / "zero123plus-v1.2" / "model_index.json").read_text())
    assert torch.allclose(model.ramping.flatten(), torch.tensor(index["ramping_coefficients"]))
    # attn1 processors route through the shared reference bank, cross-attention stays plain
    processors = model.unet.attn_processors
    assert all(hasattr(p, "bank") == name.endswith("attn1.processor") for name, p in processors.items())


def test_instantmesh_unet_replaces_the_unet_strictly():
    plain, instantmesh = tiny_zero123plus(), tiny_zero123plus(instantmesh_unet=True)
    assert instantmesh.name == "zero123plus-v1.2-instantmesh" and instantmesh.flavour.input_background == 1.0
    assert not torch.equal(plain.unet.conv_in.weight, instantmesh.unet.conv_in.weight)
    assert torch.equal(plain.vae.encoder.conv_in.weight, instantmesh.vae.encoder.conv_in.weight)


def test_v11_is_detected_from_the_folder_name():
    model = load_zero123plus(tiny_models_dir() / "zero123plus-v1.1")
    assert model.layout.name == "zero123pp_v11"


def test_wrong_model_in_the_unet_slot_names_the_file(tmp_path):
    vae_file = tiny_models_dir() / "zero123plus-v1.2" / "vae" / "diffusion_pytorch_model.safetensors"
    with pytest.raises(WeightsError, match=r"diffusion_pytorch_model.safetensors is not a Zero123\+\+ UNet.*missing keys"):
        load_zero123plus(tiny_models_dir() / "zero123plus-v1.2", unet_file=vae_file)


def test_truncated_component_and_broken_index(tmp_path):
    folder = tmp_path / "zero123plus-v1.2"
    shutil.copytree(tiny_models_dir() / "zero123plus-v1.2", folder)
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    unet.write_bytes(unet.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="unet.*not a readable safetensors file"):
        load_zero123plus(folder)
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    with pytest.raises(WeightsError, match="no ramping_coefficients.*not a Zero123"):
        load_zero123plus(folder)
    (folder / "model_index.json").write_text("{not json")
    with pytest.raises(WeightsError, match="model_index.json is not valid JSON"):
        load_zero123plus(folder)


def test_catalog_lists_official_choices_and_local_folders(tmp_path):
    shutil.copytree(tiny_models_dir() / "zero123plus-v1.2", tmp_path / "my-finetune")
    names = list_multiview_models([tmp_path])
    assert names[:3] == ["zero123plus-v1.2-instantmesh", "zero123plus-v1.2", "zero123plus-v1.1"]
    assert "my-finetune" in names
    files = resolve_multiview_model("my-finetune", [tmp_path])
    assert files.folder == tmp_path / "my-finetune" and files.unet_file is None
    files = resolve_multiview_model("zero123plus-v1.2-instantmesh", [tmp_path, tiny_models_dir()])
    assert files.folder == tiny_models_dir() / "zero123plus-v1.2"
    assert files.unet_file.name == "diffusion_pytorch_model.bin"
    with pytest.raises(WeightsError, match="neither an official choice"):
        resolve_multiview_model("nothing-here", [tmp_path])


def test_real_size_configs_have_the_released_parameter_counts():
    """The benchmark's real-size architecture is the release's (counts from REFERENCE.md)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    factories = {
        "unet": (lambda: UNet2DConditionModel(**REAL_ZERO123PP_CONFIGS["unet"]), 865_910_724),
        "vae": (lambda: AutoencoderKL(**REAL_ZERO123PP_CONFIGS["vae"]), 83_653_863),
        "text_encoder": (lambda: CLIPTextModel(CLIPTextConfig(**REAL_ZERO123PP_CONFIGS["text_encoder"])), 340_387_840),
        "vision_encoder": (
            lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**REAL_ZERO123PP_CONFIGS["vision_encoder"])),
            632_076_800,
        ),
    }
    for name, (factory, expected) in factories.items():
        module = build_on_meta(factory)
        assert sum(p.numel() for p in module.parameters()) == expected, name
