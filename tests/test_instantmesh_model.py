import json
from pathlib import Path

import pytest
import torch

from partgen_models.modules import build_on_meta
from partgen_models.reconstruction.loader import load_instantmesh
from partgen_models.reconstruction.lrm import LargeReconstructionModel, infer_config, sample_triplanes
from partgen_models.testing.tiny_instantmesh import REAL_LRM_CONFIGS, TINY_LRM_CONFIGS, write_tiny_instantmesh
from partgen_models.weights import WeightsError

KEYS = Path(__file__).parent / "data" / "instantmesh_keys.json"


@pytest.mark.parametrize("variant", ["mesh-base", "mesh-large", "nerf-base", "nerf-large"])
def test_real_size_module_tree_is_the_release_checkpoints(variant):
    """Key names and shapes of upstream's module tree (tests/data/instantmesh_upstream.md)."""
    expected = json.loads(KEYS.read_text())[f"instant-{variant}"]
    model = build_on_meta(lambda: LargeReconstructionModel(REAL_LRM_CONFIGS[variant]))
    ours = {f"lrm_generator.{k}": list(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: list(v) for k, v in expected["keys"].items()}
    assert sum(v.numel() for v in model.state_dict().values()) == expected["num_params"]
    # and the sizes come back from the shapes alone
    assert infer_config(model.state_dict()) == REAL_LRM_CONFIGS[variant]


@pytest.mark.parametrize("variant", ["mesh", "nerf"])
def test_tiny_checkpoint_loads_strictly_and_runs(tmp_path, variant):
    path = write_tiny_instantmesh(tmp_path / f"instant_{variant}_tiny.ckpt", variant)
    model = load_instantmesh(path)
    assert model.config == TINY_LRM_CONFIGS[variant]
    planes = model.forward_planes(torch.rand(2, 6, 3, 320, 320), torch.rand(2, 6, 16))
    assert planes.shape == (2, 3, 8, 16, 16) and torch.isfinite(planes).all()


def test_not_an_instantmesh_checkpoint(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.weight": torch.ones(1)}}, str(path))
    with pytest.raises(WeightsError, match="no 'lrm_generator.\\*' tensors"):
        load_instantmesh(path)
    path = write_tiny_instantmesh(tmp_path / "tiny.ckpt", "mesh")
    state = torch.load(str(path), weights_only=True)
    del state["state_dict"]["lrm_generator.transformer.deconv.weight"]
    torch.save(state, str(path))
    with pytest.raises(WeightsError, match="tiny.ckpt is not an InstantMesh checkpoint"):
        load_instantmesh(path)


def test_triplane_sampling_conventions():
    """Plane 0 is indexed by (x, y), plane 1 by (x, z), plane 2 by (z, y); features concatenated."""
    planes = torch.zeros(1, 3, 1, 2, 2)
    planes[0, 0, 0] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])  # rows = y, columns = x
    planes[0, 1, 0] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])  # rows = z, columns = x
    planes[0, 2, 0] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])  # rows = y, columns = z
    point = torch.tensor([[[0.5, -0.5, 0.5]]])  # texel centres at +-0.5 with align_corners=False
    features = sample_triplanes(planes, point)
    assert features.shape == (1, 1, 3)
    assert features[0, 0].tolist() == [1.0, 3.0, 1.0]
