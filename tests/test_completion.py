import pytest
import torch

from partgen_models.completion.complete import (
    CompletionError,
    CompletionOptions,
    complete_parts,
    complete_training_free,
    edit_part,
    masked_views,
)
from partgen_models.completion.completer import load_partgen_completer
from partgen_models.multiview import MultiViewOptions, generate_views
from partgen_models.segmentation.select import PartMasks
from partgen_models.weights import WeightsError
from tiny_models import tiny_models_dir, tiny_zero123plus

FAST = CompletionOptions(num_inference_steps=2, seed=5)


@pytest.fixture(scope="module")
def views():
    image = torch.ones(1, 96, 96, 3)
    image[0, 20:70, 30:60] = torch.tensor([0.8, 0.2, 0.1])
    return generate_views(tiny_zero123plus(instantmesh_unet=True), image, options=MultiViewOptions(2, view_size=64))[0]


@pytest.fixture(scope="module")
def completer():
    return load_partgen_completer(tiny_models_dir() / "partgen-completion", [tiny_models_dir()])


def _parts(views, names=("top", "bottom")):
    masks = torch.zeros(len(names), 6, 64, 64, dtype=torch.bool)
    masks[0, :, 8:32, 16:48] = True
    if len(names) > 1:
        masks[1, :, 32:56, 16:48] = True
    return PartMasks(masks, tuple(names), ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0))[: len(names)], views.layout)


def test_completer_takes_thirteen_channels(completer):
    assert completer.diffusion.unet.config.in_channels == 13


def test_wrong_channel_count_is_refused(tmp_path):
    import shutil

    shutil.copytree(tiny_models_dir() / "partgen-segmentation", tmp_path / "fake")
    (tmp_path / "fake" / "partgen.json").write_text('{"format": "partgen-completion", "version": 1, "base_model": "zero123plus-v1.2"}')
    with pytest.raises(WeightsError, match="takes 8 input channels; PartGen's completer takes 13"):
        load_partgen_completer(tmp_path / "fake", [tiny_models_dir()])


def test_baseline_keeps_only_the_visible_part(views):
    parts = _parts(views)
    result = masked_views(views, parts)
    assert result.images.shape == (2, 6, 64, 64, 3) and result.names == ("top", "bottom")
    assert torch.equal(result.images[0, :, 8:32, 16:48], views.images[:, 8:32, 16:48])
    assert torch.all(result.images[0, :, 40:, :] == 1.0)
    assert torch.equal(result.c2w, views.c2w)


def test_all_parts_in_one_batch_and_batch_invariant(completer, views):
    parts = _parts(views)
    calls = []
    hook = completer.diffusion.unet.register_forward_hook(lambda m, a, o: calls.append(tuple(a[0].shape[:2])))
    try:
        both = complete_parts(completer, views, parts, FAST)
    finally:
        hook.remove()
    assert calls == [(2, 13), (4, 13)] * 2  # one reference pass, one main pass for 2 parts x 2 halves
    assert both.images.shape == (2, 6, 64, 64, 3) and both.names == ("top", "bottom")
    assert torch.equal(both.c2w, views.c2w) and both.layout == views.layout
    alone = complete_parts(completer, views, PartMasks(parts.masks[1:], ("bottom",), parts.colors[1:], parts.layout), FAST)
    assert (both.images[1] - alone.images[0]).abs().max() < 1e-4  # a part's result ignores its batch
    split = complete_parts(completer, views, parts, CompletionOptions(2, seed=5, max_batch=1))
    assert (both.images - split.images).abs().max() < 1e-4


def test_context_switch_changes_the_result(completer, views):
    parts = _parts(views)
    with_context = complete_parts(completer, views, parts, FAST)
    without = complete_parts(completer, views, parts, CompletionOptions(2, seed=5, use_context=False))
    assert (with_context.images - without.images).abs().max() > 1e-3


def test_editing_changes_only_the_chosen_part(completer, views):
    parts = _parts(views)
    edited = edit_part(completer, views, parts, "top", "a cowboy hat", FAST)
    plain = complete_parts(completer, views, PartMasks(parts.masks[:1], ("top",), parts.colors[:1], parts.layout), FAST)
    assert (edited.images[0] - plain.images[0]).abs().max() > 1e-3  # the instruction reached the model
    assert torch.equal(edited.images[1], masked_views(views, parts).images[1])
    with pytest.raises(CompletionError, match="there is no part 'hat'; parts are: top, bottom"):
        edit_part(completer, views, parts, "hat", "a hat", FAST)
    with pytest.raises(CompletionError, match="instruction is empty"):
        edit_part(completer, views, parts, "top", "  ", FAST)


def test_training_free_keeps_known_pixels_and_is_deterministic(views):
    model = tiny_zero123plus(instantmesh_unet=True)
    parts = _parts(views)
    input_masks = torch.zeros(2, 512, 512)
    input_masks[0, :256] = 1.0
    input_masks[1, 256:] = 1.0
    first = complete_training_free(model, views, parts, input_masks, FAST)
    for p in range(2):
        known = parts.masks[p]
        assert torch.allclose(first.images[p][known], views.images[known], atol=1e-6)
    assert torch.equal(first.c2w, views.c2w)
    again = complete_training_free(model, views, parts, input_masks, FAST)
    assert torch.equal(first.images, again.images)
    alone = complete_training_free(model, views, PartMasks(parts.masks[1:], ("bottom",), parts.colors[1:], parts.layout),
                                   input_masks[1:], FAST)
    assert (first.images[1] - alone.images[0]).abs().max() < 1e-4  # batch = per-part runs
    with pytest.raises(CompletionError, match="one mask per part"):
        complete_training_free(model, views, parts, input_masks[:1], FAST)


@pytest.mark.parametrize("change, message", [
    ("empty", "'top' selects no pixel"),
    ("size", r"part masks are \(6, 32, 32\)"),
    ("whole", "covers the whole object"),
])
def test_inconsistent_masks_are_explained(views, change, message):
    parts = _parts(views)
    masks = parts.masks.clone()
    if change == "empty":
        masks[0] = False
    elif change == "size":
        masks = masks[:, :, :32, :32]
    else:
        masks[0] = views.alpha > 0.5
    with pytest.raises(CompletionError, match=message):
        masked_views(views, PartMasks(masks, parts.names, parts.colors, parts.layout))
