"""Upstream side of ``bench_reconstruction.py --upstream``: times upstream InstantMesh on our weights.

Not meant to be run by hand: ``bench_reconstruction.py`` writes a spec (JSON) and the inputs into a
temporary folder and starts this script in a subprocess whose ``PYTHONPATH`` is ``--upstream-env`` (the
older transformers upstream pins), then import stubs for ``nvdiffrast`` / ``cv2``, then ``--upstream``
(the folder holding upstream's ``src/``). Nothing of upstream is copied here or edited.

What runs (upstream's own code; the shims only replace things that need the Hub or a rasterizer):

* the model: ``src.models.lrm_mesh.InstantMesh`` / ``src.models.lrm.InstantNeRF`` built with our
  config's sizes plus the release configs' other params, DINO from a local ``ViTConfig``
  (``install_dino_shim`` of ``tests/data/make_instantmesh_keys.py``), weights loaded as ``run.py`` does:
  ``torch.load(ckpt, map_location='cpu')['state_dict']``, keys starting ``lrm_generator.`` with the prefix
  cut, ``load_state_dict(strict=True)``; then ``.to(device, dtype).eval()`` and ``torch.no_grad()``;
* ``forward_planes(images, cameras)`` with batch B=P and as P calls with B=1;
* mesh: for each grid R, ``model.grid_res = R`` (the only thing the constructor's ``grid_res`` sets)
  and ``model.init_flexicubes_geometry(device, fovy=30.0)`` as ``run.py``; ``NeuralRender`` is replaced
  by a placeholder because its constructor opens an nvdiffrast CUDA rasterizer context, which vertex
  colour extraction never uses (the golden generator passes ``renderer=None`` for the same reason);
  then ``extract_mesh(planes, use_texture_map=False)``;
* NeRF: ``extract_mesh(planes, mesh_resolution=R, mesh_threshold=threshold)``.

Peak memory per step: ``torch.cuda.max_memory_allocated`` after a reset, or on CPU the process's peak
RSS during the step (freed heap returned with glibc ``malloc_trim``, then ``VmHWM`` reset through
``/proc/self/clear_refs`` at the step's start). Time: median of ``repeats`` runs; peak: the largest.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import resource
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent

UPSTREAM_CLASS = {"mesh": "src.models.lrm_mesh.InstantMesh", "nerf": "src.models.lrm.InstantNeRF"}
# Non-size constructor params of configs/instant-{mesh,nerf}-large.yaml (grid_res set per resolution).
RELEASE_PARAMS = {
    "mesh": dict(encoder_freeze=False, encoder_model_name="facebook/dino-vitb16",
                 rendering_samples_per_ray=128, grid_scale=2.1),
    "nerf": dict(encoder_freeze=False, encoder_model_name="facebook/dino-vitb16", rendering_samples_per_ray=128),
}
FOVY = 30.0  # run.py: model.init_flexicubes_geometry(device, fovy=30.0)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(key))


def _trim() -> None:
    """Return freed heap to the OS (glibc ``malloc_trim``), so that RSS at a step's start is live memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _can_reset_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        _status_bytes("VmHWM:")
        return True
    except (OSError, StopIteration):
        return False


def measure(fn, device, per_step_rss: bool, repeats: int = 1):
    """(seconds, peak bytes, result): median time and largest peak of ``repeats`` calls (each peak the
    step's own, see the module docstring); the last call's result."""
    import statistics

    import torch

    times, peaks = [], []
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        elif per_step_rss:
            _trim()
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        if device.type == "cuda":
            peaks.append(torch.cuda.max_memory_allocated(device))
        elif per_step_rss:
            peaks.append(_status_bytes("VmHWM:"))
        else:
            peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return statistics.median(times), max(peaks), result


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


class _NoRasterizer:
    """Stands in for NeuralRender: its constructor opens ``dr.RasterizeCudaContext`` (nvdiffrast)."""

    def __init__(self, device="cuda", camera_model=None):
        self.device = device
        self.camera = camera_model
        self.ctx = None


def run(spec: dict, tmp: Path) -> dict:
    import importlib

    import numpy as np
    import torch
    import transformers

    sys.path.insert(0, str(REPO_ROOT / "tests" / "data"))
    from make_instantmesh_keys import DINO_VITB16_PREPROCESSOR, install_dino_shim

    torch.set_num_threads(spec["threads"])
    torch.set_grad_enabled(False)
    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    variant = spec["variant"]
    repeats = spec.get("repeats", 1)
    per_step_rss = device.type != "cuda" and _can_reset_rss()
    inputs = torch.load(str(tmp / "inputs.pt"), map_location="cpu")
    out: dict = {"steps": {}, "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                 "per_step_rss": per_step_rss, "threads": torch.get_num_threads()}

    # 1. model, as run.py builds and loads it
    install_dino_shim(spec["vit_config"], DINO_VITB16_PREPROCESSOR)
    module, name = UPSTREAM_CLASS[variant].rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    params = {**spec["model_params"], **RELEASE_PARAMS[variant]}
    if variant == "mesh":
        params["grid_res"] = spec["resolutions"][0]
    model = cls(**params)
    state_dict = torch.load(spec["checkpoint"], map_location="cpu")["state_dict"]
    state_dict = {k[14:]: v for k, v in state_dict.items() if k.startswith("lrm_generator.")}
    model.load_state_dict(state_dict, strict=True)
    del state_dict
    model = model.to(device=device, dtype=dtype).eval()
    if per_step_rss:
        _trim()
    out["rss_after_load"] = _status_bytes("VmRSS:") if device.type != "cuda" else None
    cameras = inputs["cameras"]
    from src.utils.camera_util import get_zero123plus_input_cameras

    # run.py's cameras (radius 4.0 at scale 1, fov 30): the same as ours, checked here
    out["cameras_max_abs_diff"] = float((get_zero123plus_input_cameras(1, 4.0, 30.0)[0] - cameras.float()).abs().max())

    def planes_of(images):
        images = images.to(device, dtype)
        cams = cameras[None].expand(images.shape[0], -1, -1).to(device, dtype)
        return model.forward_planes(images, cams)

    # 2. forward_planes: warm-up, then per P batched (B=P) and sequential (P x B=1)
    planes_of(inputs[f"images_{spec['parts'][0]}"][:1])
    for parts in spec["parts"]:
        images = inputs[f"images_{parts}"]
        for mode in ("batched", "sequential"):
            key = f"planes_{parts}_{mode}"
            try:
                if mode == "batched":
                    seconds, peak, planes = measure(lambda: planes_of(images), device, per_step_rss, repeats)
                else:
                    seconds, peak, planes = measure(
                        lambda: [planes_of(images[i : i + 1]) for i in range(parts)], device, per_step_rss,
                        repeats)
                out["steps"][key] = {"seconds": seconds, "peak": peak}
                if parts == spec["parts"][-1] and mode == "batched":
                    ours = inputs["planes"].to(device)
                    out["planes_max_abs_diff"] = float((planes[:1].float() - ours.float()).abs().max())
                del planes
            except Exception as exc:  # noqa: BLE001  (reported in the table, not hidden)
                out["steps"][key] = {"error": _error(exc)}
                traceback.print_exc()

    # 3. extraction from OUR planes of part 0 (the same field for both implementations)
    planes = inputs["planes"].to(device, dtype)
    if variant == "mesh":
        import src.models.lrm_mesh as lrm_mesh

        lrm_mesh.NeuralRender = _NoRasterizer
    for resolution in spec["resolutions"]:
        key = f"extract_{resolution}"
        if resolution > spec["max_resolution"]:
            out["steps"][key] = {"error": f"skipped: R > --upstream-max-resolution {spec['max_resolution']}"}
            continue
        try:
            if variant == "mesh":
                model.grid_res = resolution

                def setup():
                    model.geometry = None  # the previous grid is freed first, as in a fresh process
                    model.init_flexicubes_geometry(device, fovy=FOVY)

                model.geometry = None
                seconds, peak, _ = measure(setup, device, per_step_rss, repeats)
                out["steps"][f"setup_{resolution}"] = {"seconds": seconds, "peak": peak}
                call = lambda: model.extract_mesh(planes, use_texture_map=False)  # noqa: E731
            else:
                call = lambda: model.extract_mesh(  # noqa: E731
                    planes, mesh_resolution=resolution, mesh_threshold=spec["threshold"], use_texture_map=False)
            seconds, peak, (vertices, faces, colors) = measure(call, device, per_step_rss, repeats)
            out["steps"][key] = {"seconds": seconds, "peak": peak, "vertices": int(vertices.shape[0]),
                                 "faces": int(faces.shape[0])}
            torch.save({"vertices": torch.from_numpy(np.ascontiguousarray(vertices)).float(),
                        "faces": torch.from_numpy(np.ascontiguousarray(faces).astype(np.int64))},
                       str(tmp / f"upstream_mesh_{resolution}.pt"))
            del vertices, faces, colors
        except Exception as exc:  # noqa: BLE001
            out["steps"][key] = {"error": _error(exc)}
            traceback.print_exc()
        if variant == "mesh":
            model.geometry = None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tmp", type=Path, required=True, help="folder with spec.json and inputs.pt")
    args = parser.parse_args()
    spec = json.loads((args.tmp / "spec.json").read_text())
    result = run(spec, args.tmp)
    (args.tmp / "upstream_result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
