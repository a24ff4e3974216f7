import io
import os

import pytest
import torch
from safetensors.torch import save_file

from partgen_models import weights
from partgen_models.weights import OFFICIAL_MODELS, WeightsError, check_state_dict, ensure_model, load_state_dict


def test_safetensors_and_pickles_load(tmp_path):
    tensors = {"a": torch.arange(4.0), "b": torch.ones(2, 2)}
    save_file(tensors, str(tmp_path / "w.safetensors"))
    torch.save(tensors, str(tmp_path / "w.bin"))
    for name in ("w.safetensors", "w.bin"):
        loaded = load_state_dict(tmp_path / name, "a test model")
        assert set(loaded) == {"a", "b"} and torch.equal(loaded["a"], tensors["a"])


def test_missing_and_empty_files_name_the_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist.*expected a test model"):
        load_state_dict(tmp_path / "nope.safetensors", "a test model")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(WeightsError, match="empty.bin is empty"):
        load_state_dict(tmp_path / "empty.bin", "a test model")


def test_truncated_safetensors_is_reported_not_a_torch_trace(tmp_path):
    path = tmp_path / "unet.safetensors"
    save_file({"w": torch.randn(64, 64)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(WeightsError, match=r"unet.safetensors is not a readable safetensors file.*truncated or corrupt"):
        load_state_dict(path, "a UNet")


class _NotWeights:
    pass


def test_corrupt_and_unsafe_pickles_are_refused(tmp_path):
    path = tmp_path / "model.bin"
    torch.save({"w": torch.randn(8)}, str(path))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(WeightsError, match="model.bin could not be read as a PyTorch checkpoint"):
        load_state_dict(path, "a UNet")

    evil = tmp_path / "evil.bin"
    torch.save({"w": _NotWeights()}, str(evil))
    with pytest.raises(WeightsError) as refused:  # weights_only refuses arbitrary objects
        load_state_dict(evil, "a UNet")
    message = str(refused.value)
    assert "evil.bin is refused because it is unsafe" in message and "_NotWeights" in message
    assert "safetensors" in message
    # Torch's advice to retry without the check is neither repeated nor chained into the traceback.
    assert "weights_only" not in message and "trust" not in message
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    nested = tmp_path / "nested.bin"
    torch.save({"state_dict": {"w": torch.ones(1)}}, str(nested))
    with pytest.raises(WeightsError, match="flat dict of tensors"):
        load_state_dict(nested, "a UNet")


def test_check_state_dict_names_every_kind_of_difference():
    expected = {"a": torch.Size([2]), "b": torch.Size([3]), "c": torch.Size([1])}
    given = {"a": torch.zeros(2), "b": torch.zeros(4), "d": torch.zeros(1)}
    with pytest.raises(WeightsError) as error:
        check_state_dict(expected, given, "f.safetensors", "a VAE")
    message = str(error.value)
    assert "f.safetensors is not a VAE" in message
    assert "1 missing keys (c)" in message and "1 unexpected keys (d)" in message and "b (4,) != (3,)" in message


def test_download_switch_off_names_files_source_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.NO_DOWNLOAD_ENV, "1")
    model = OFFICIAL_MODELS["zero123plus-v1.2"]
    with pytest.raises(WeightsError) as error:
        ensure_model(model, tmp_path)
    message = str(error.value)
    assert "downloading is switched off" in message
    assert "https://huggingface.co/sudo-ai/zero123plus-v1.2" in message
    assert str(tmp_path / "zero123plus-v1.2") in message and "model_index.json" in message


def test_hf_offline_also_switches_downloads_off(monkeypatch):
    monkeypatch.delenv(weights.NO_DOWNLOAD_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not weights.downloads_allowed()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert weights.downloads_allowed()


def test_download_goes_to_the_model_folder_with_progress(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv(weights.NO_DOWNLOAD_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns, local_dir, tqdm_class):
        calls.append((repo_id, allow_patterns, local_dir))
        bar = tqdm_class(total=10, file=io.StringIO())
        bar.update(4)
        bar.update(6)
        os.makedirs(local_dir, exist_ok=True)
        open(os.path.join(local_dir, "diffusion_pytorch_model.bin"), "wb").close()
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    seen = []
    model = OFFICIAL_MODELS["instantmesh-zero123plus-unet"]
    folder = ensure_model(model, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert folder == tmp_path / "instantmesh-zero123plus-unet"
    assert calls == [("TencentARC/InstantMesh", ["diffusion_pytorch_model.bin"], str(folder))]
    assert seen == [(4, 10), (10, 10)]
    assert ensure_model(model, tmp_path) == folder and len(calls) == 1  # installed: no second download


def test_failed_download_is_an_actionable_error(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv(weights.NO_DOWNLOAD_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def offline(**kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(WeightsError, match=r"the download failed \(network is unreachable\).*put them"):
        ensure_model(OFFICIAL_MODELS["zero123plus-v1.1"], tmp_path)
