#!/usr/bin/env python
"""Golden outputs of the UPSTREAM InstantMesh LRM (TencentARC/InstantMesh) on our tiny seeded weights.

Upstream is NOT part of this repository: unpack its ``src/`` and ``configs/`` into a folder of your own
(``--upstream``) and install the transformers it pins into a ``pip --target`` folder (``--env``); see
``instantmesh_golden.md`` and ``instantmesh_upstream.md``.

    python tests/data/make_instantmesh_golden.py --upstream /tmp/instantmesh_src --env /tmp/im_env \
        [--out tests/data/instantmesh_golden.safetensors]

Steps:
1. This interpreter (the project's libraries) writes the tiny checkpoints with
   ``partgen_models.testing.write_tiny_instantmesh(tmp/'tiny_{mesh,nerf}.ckpt', variant, seed=0)`` (the
   very files the parity test loads with our code) and the seeded inputs (images, query points).
2. A worker subprocess (``--env``, then import stubs, then ``--upstream`` on PYTHONPATH) builds upstream's
   ``InstantMesh`` / ``InstantNeRF`` with ``TINY_INSTANTMESH_CONFIGS[variant]`` (DINO from the tiny
   ViTConfig through the local-config shim of ``make_instantmesh_keys.py``), loads the checkpoint the way
   ``run.py`` does (keys starting ``lrm_generator.``, prefix cut, ``strict=True``), CPU float32,
   ``eval()``, ``torch.no_grad()``, and records the tensors listed in ``instantmesh_golden.md``.
3. This interpreter writes ``instantmesh_golden.safetensors`` (metadata: seeds, settings, versions,
   checkpoint hashes, the tiny configs).

No global-RNG draw of upstream's is recorded: NeRF ray marching (which draws stratified jitter and
importance samples from the global RNG) is not run; the NeRF decoder is queried directly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from make_instantmesh_keys import (  # noqa: E402  (our own helper script, same folder)
    DINO_VITB16_PREPROCESSOR,
    install_dino_shim,
    upstream_subprocess_env,
    write_stubs,
)

VARIANTS = ("mesh", "nerf")
UPSTREAM_CLASS = {"mesh": "src.models.lrm_mesh.InstantMesh", "nerf": "src.models.lrm.InstantNeRF"}
TINY_WEIGHT_SEED = 0
IMAGE_SEED = 20240415
POINT_SEED = 4096
N_POINTS = 4096
N_VIEWS = 6
IMAGE_SIZE = 320
IMAGE_BLOCK = 2  # images are 160x160 uint8 noise, each value a 2x2 pixel block (keeps the file < 2 MB)
# Non-size constructor params, as in configs/instant-{mesh,nerf}-large.yaml.
RELEASE_PARAMS = {
    "mesh": dict(encoder_freeze=False, encoder_model_name="facebook/dino-vitb16",
                 rendering_samples_per_ray=128, grid_res=128, grid_scale=2.1),
    "nerf": dict(encoder_freeze=False, encoder_model_name="facebook/dino-vitb16",
                 rendering_samples_per_ray=128),
}
WEIGHT_GRID_RES = 4      # FlexiCubes grid whose 64 cubes feed net_weight (tensor mesh_grid4_*)
EXTRACT_GRID_RES = 16    # FlexiCubes grid of the end-to-end extract_mesh run (mesh_g16_*)
AXIS_GRID_RES = 128      # release grid: its vertex x-axis (mesh_axis_g128)
NERF_GRID = 16           # forward_grid size (nerf_grid16_sigma)


def make_inputs():
    import torch

    g = torch.Generator().manual_seed(IMAGE_SEED)
    low = IMAGE_SIZE // IMAGE_BLOCK
    images_u8 = torch.randint(0, 256, (1, N_VIEWS, 3, low, low), generator=g, dtype=torch.uint8)
    g = torch.Generator().manual_seed(POINT_SEED)
    points = torch.rand(1, N_POINTS, 3, generator=g) * 2 - 1
    # first 9 points: the 8 corners of [-1, 1]^3 (grid_sample edge/zero-padding behaviour) and the origin
    corners = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
    points[0, :8] = corners
    points[0, 8] = 0.0
    return images_u8, points


def images_from_u8(images_u8):
    x = images_u8.repeat_interleave(IMAGE_BLOCK, dim=-2).repeat_interleave(IMAGE_BLOCK, dim=-1)
    return x.float() / 255.0


# ----------------------------------------------------------------------------------------------
# worker side (upstream's environment)
# ----------------------------------------------------------------------------------------------

def worker(args) -> None:
    import importlib

    import numpy as np
    import torch
    import transformers
    from safetensors.torch import load_file, save_file

    tmp = Path(args.tmp)
    spec = json.loads((tmp / "spec.json").read_text())
    inputs = load_file(str(tmp / "inputs.safetensors"))
    images = images_from_u8(inputs["images_u8"])
    points = inputs["points"]

    from src.utils.camera_util import get_zero123plus_input_cameras
    from src.models.geometry.rep_3d.flexicubes import FlexiCubes
    from src.models.geometry.rep_3d.flexicubes_geometry import FlexiCubesGeometry

    cameras = get_zero123plus_input_cameras(batch_size=1, radius=4.0, fov=30.0)
    out = {"cameras": cameras.contiguous()}
    notes = {}
    torch.set_grad_enabled(False)

    for variant in VARIANTS:
        cfg = spec["configs"][variant]
        install_dino_shim(cfg["vit_config"], DINO_VITB16_PREPROCESSOR)
        module, name = UPSTREAM_CLASS[variant].rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        params = {**cfg["model"], **RELEASE_PARAMS[variant]}
        torch.manual_seed(0)  # upstream's constructors draw random inits; all are overwritten below
        model = cls(**params)
        sd = torch.load(spec["ckpts"][variant], map_location="cpu", weights_only=False)["state_dict"]
        sd = {k[14:]: v for k, v in sd.items() if k.startswith("lrm_generator.")}  # as run.py
        model.load_state_dict(sd, strict=True)
        for k, v in model.state_dict().items():
            assert torch.equal(v, sd[k]), k
        model = model.float().eval()
        p = f"{variant}_"

        # --- encoder internals ---------------------------------------------------------------
        enc = model.encoder
        flat = images.reshape(-1, *images.shape[2:])
        pix = enc.processor(images=flat.float(), return_tensors="pt", do_rescale=False,
                            do_resize=False)["pixel_values"]
        mean = torch.tensor(DINO_VITB16_PREPROCESSOR["image_mean"]).view(1, 3, 1, 1)
        std = torch.tensor(DINO_VITB16_PREPROCESSOR["image_std"]).view(1, 3, 1, 1)
        notes[p + "pixel_values_vs_torch_maxabs"] = float((pix - (flat - mean) / std).abs().max())
        notes[p + "pixel_values_dtype"] = str(pix.dtype)
        out[p + "pixel_values_crop"] = pix[:, :, :16, :16].contiguous()
        out[p + "camera_embeddings"] = enc.camera_embedder(cameras).contiguous()
        emb = enc.model.embeddings
        n_tok = 1 + (IMAGE_SIZE // cfg["vit_config"]["patch_size"]) ** 2
        dummy = torch.zeros(1, n_tok, cfg["vit_config"]["hidden_size"])
        pos = emb.interpolate_pos_encoding(dummy, IMAGE_SIZE, IMAGE_SIZE)
        out[p + "pos_embed_interpolated"] = pos.contiguous()
        # how far a size=(20, 20) bicubic resize (what transformers' own interpolation does) is from it
        n0 = int(round((emb.position_embeddings.shape[1] - 1) ** 0.5))
        grid0 = emb.position_embeddings[:, 1:].reshape(1, n0, n0, -1).permute(0, 3, 1, 2)
        n1 = IMAGE_SIZE // cfg["vit_config"]["patch_size"]
        by_size = torch.nn.functional.interpolate(grid0, size=(n1, n1), mode="bicubic", align_corners=False)
        by_size = by_size.permute(0, 2, 3, 1).reshape(1, n1 * n1, -1)
        notes[p + "pos_interp_vs_size_resize_maxabs"] = float((pos[:, 1:] - by_size).abs().max())
        feats = enc(images, cameras)  # [(B V), 1 + 20*20, D]
        out[p + "image_feats_view0"] = feats[0].contiguous()
        out[p + "image_feats_cls"] = feats[:, 0].contiguous()

        # --- triplanes -----------------------------------------------------------------------
        planes = model.forward_planes(images, cameras)  # [1, 3, C, 2*low, 2*low]
        out[p + "planes"] = planes.contiguous()
        syn = model.synthesizer

        if variant == "mesh":
            # 4096 points: sdf / deformation (raw decoder outputs) and rgb (sigmoid-clamped texture)
            dummy_cubes = torch.arange(8).view(1, 8)  # weight head needs cubes; unused here
            sdf, deformation, _ = syn.get_geometry_prediction(planes, points, dummy_cubes)
            out[p + "sdf"] = sdf.contiguous()
            out[p + "deformation"] = deformation.contiguous()
            out[p + "rgb"] = syn.get_texture_prediction(planes, points).contiguous()

            # net_weight on the 64 cubes of a 4^3 FlexiCubes grid built by upstream's geometry class
            geo4 = FlexiCubesGeometry(grid_res=WEIGHT_GRID_RES, scale=params["grid_scale"], device="cpu",
                                      renderer=None)
            sdf4, def4, w4 = syn.get_geometry_prediction(planes, geo4.verts.unsqueeze(0), geo4.indices)
            out[p + "grid4_verts"] = geo4.verts.contiguous()
            out[p + "grid4_cubes"] = geo4.indices.contiguous()
            out[p + "grid4_sdf"] = sdf4.contiguous()
            out[p + "grid4_deformation"] = def4.contiguous()
            out[p + "grid4_weight"] = w4.contiguous()

            # x-axis of the release grid (128): construct_voxel_grid's 1e-5 rounding, then * grid_scale
            fc = FlexiCubes("cpu", weight_scale=0.5)
            v_axis, _ = fc.construct_voxel_grid((AXIS_GRID_RES, 1, 1))
            axis = torch.unique(v_axis[:, 0] * params["grid_scale"])
            out[p + "axis_g128"] = axis.contiguous()
            lin = torch.linspace(-0.5, 0.5, AXIS_GRID_RES + 1) * params["grid_scale"]
            notes[p + "axis_g128_vs_linspace_maxabs"] = float((axis - lin).abs().max())

            # end to end on a 16^3 grid: upstream's extract_mesh (vertex colours), sdf after the
            # empty-shape fix, deformation after tanh / (grid_res * 4)
            model.grid_res = EXTRACT_GRID_RES
            model.geometry = FlexiCubesGeometry(grid_res=EXTRACT_GRID_RES, scale=params["grid_scale"],
                                                device="cpu", renderer=None)
            sdf16, def16, _, w16 = model.get_sdf_deformation_prediction(planes)
            out[p + "g16_sdf_fixed"] = sdf16.contiguous()
            out[p + "g16_deformation_scaled"] = def16.contiguous()
            sdf16_raw, _, _ = syn.get_geometry_prediction(planes, model.geometry.verts.unsqueeze(0),
                                                          model.geometry.indices)
            notes[p + "g16_raw_sdf_min_max"] = [float(sdf16_raw.min()), float(sdf16_raw.max())]
            notes[p + "g16_empty_shape_fix_applied"] = bool(not torch.equal(sdf16_raw, sdf16))
            verts, faces, colors = model.extract_mesh(planes, use_texture_map=False)
            out[p + "g16_mesh_vertices"] = torch.from_numpy(np.ascontiguousarray(verts)).float()
            out[p + "g16_mesh_faces"] = torch.from_numpy(np.ascontiguousarray(faces)).to(torch.int32)
            out[p + "g16_mesh_colors"] = torch.from_numpy(np.ascontiguousarray(colors))
            notes[p + "g16_mesh_counts"] = [int(verts.shape[0]), int(faces.shape[0])]
        else:
            opts = syn.rendering_kwargs
            raw = syn.renderer.run_model(planes, syn.decoder, points, torch.zeros_like(points), opts)
            out[p + "sigma_raw"] = raw["sigma"].contiguous()
            act = syn.forward_points(planes, points)
            out[p + "density"] = act["sigma"].contiguous()  # softplus(raw - 1)
            out[p + "rgb"] = act["rgb"].contiguous()
            notes[p + "rgb_run_model_equals_forward_points"] = bool(torch.equal(raw["rgb"], act["rgb"]))
            grid = syn.forward_grid(planes, NERF_GRID)
            out[p + "grid16_density"] = grid["sigma"].contiguous()  # [1, G, G, G, 1], ij order
            notes[p + "grid16_density_min_max"] = [float(grid["sigma"].min()), float(grid["sigma"].max())]
            # marching cubes as extract_mesh does, at a threshold inside the tiny field's range
            thr = float(torch.quantile(grid["sigma"].flatten(), 0.5))
            thr = round(thr, 3)
            notes[p + "extract_threshold"] = thr
            try:
                verts, faces, colors = model.extract_mesh(planes, mesh_resolution=NERF_GRID, mesh_threshold=thr)
                out[p + "g16_mesh_vertices"] = torch.from_numpy(np.ascontiguousarray(verts)).float()
                out[p + "g16_mesh_faces"] = torch.from_numpy(np.ascontiguousarray(faces.astype(np.int32)))
                out[p + "g16_mesh_colors"] = torch.from_numpy(np.ascontiguousarray(colors))
                notes[p + "g16_mesh_counts"] = [int(verts.shape[0]), int(faces.shape[0])]
                notes[p + "g16_mesh_vertices_dtype_upstream"] = str(verts.dtype)
            except IndexError as exc:
                notes[p + "g16_mesh_error"] = repr(exc)
            try:
                model.extract_mesh(planes, mesh_resolution=NERF_GRID, mesh_threshold=10.0)
                notes[p + "extract_threshold_10"] = "ok"
            except Exception as exc:  # noqa: BLE001  (recorded, not hidden)
                notes[p + "extract_threshold_10"] = f"{type(exc).__name__}: {exc}"
        del model

    import mcubes
    notes["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                         "numpy": np.__version__, "python": sys.version.split()[0],
                         "PyMCubes": getattr(mcubes, "__version__", "0.1.6")}
    save_file(out, str(tmp / "golden.safetensors"))
    (tmp / "notes.json").write_text(json.dumps(notes, indent=1))


# ----------------------------------------------------------------------------------------------
# driver side
# ----------------------------------------------------------------------------------------------

def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", required=False, help="folder with InstantMesh's src/ and configs/")
    ap.add_argument("--env", default=None, help="pip --target folder put first on the worker's PYTHONPATH")
    ap.add_argument("--upstream-commit", default="08822c52fdc399b93ea00e4fa9e596344ed52ccc")
    ap.add_argument("--out", default=str(HERE / "instantmesh_golden.safetensors"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if not args.upstream:
        ap.error("--upstream is required")

    sys.path.insert(0, str(REPO_ROOT))
    import torch
    from safetensors.torch import load_file, save_file

    from partgen_models.testing.tiny_instantmesh import TINY_INSTANTMESH_CONFIGS, write_tiny_instantmesh

    upstream = Path(args.upstream).resolve()
    with tempfile.TemporaryDirectory(prefix="instantmesh_golden_") as tmp:
        tmp = Path(tmp)
        ckpts = {v: str(write_tiny_instantmesh(tmp / f"tiny_{v}.ckpt", variant=v, seed=TINY_WEIGHT_SEED))
                 for v in VARIANTS}
        images_u8, points = make_inputs()
        save_file({"images_u8": images_u8, "points": points}, str(tmp / "inputs.safetensors"))
        spec = {"configs": {v: TINY_INSTANTMESH_CONFIGS[v] for v in VARIANTS}, "ckpts": ckpts}
        (tmp / "spec.json").write_text(json.dumps(spec))
        # sha256 of the state tensors (torch.save files are not byte-stable across runs)
        weight_hashes = {}
        for v in VARIANTS:
            sd = torch.load(ckpts[v], map_location="cpu", weights_only=False)["state_dict"]
            h = hashlib.sha256()
            for k in sorted(sd):
                h.update(k.encode())
                h.update(sd[k].contiguous().numpy().tobytes())
            weight_hashes[v] = h.hexdigest()

        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--tmp", str(tmp)]
        env = upstream_subprocess_env(Path(args.env).resolve() if args.env else None,
                                      write_stubs(tmp / "stubs"), upstream, tmp / "hf_home")
        subprocess.run(cmd, env=env, cwd=str(tmp), check=True)
        golden = load_file(str(tmp / "golden.safetensors"))
        notes = json.loads((tmp / "notes.json").read_text())

    golden["images_u8"] = images_u8
    golden["points"] = points
    golden = {k: golden[k].contiguous() for k in sorted(golden)}
    meta = {
        "upstream": "TencentARC/InstantMesh",
        "upstream_commit": args.upstream_commit,
        "tiny_weights": f"write_tiny_instantmesh(path, variant, seed={TINY_WEIGHT_SEED})",
        "tiny_state_sha256": json.dumps(weight_hashes),
        "tiny_configs": json.dumps({v: TINY_INSTANTMESH_CONFIGS[v] for v in VARIANTS}, sort_keys=True),
        "release_params": json.dumps(RELEASE_PARAMS, sort_keys=True),
        "images": (f"images_u8 = torch.randint(0, 256, (1, {N_VIEWS}, 3, {IMAGE_SIZE // IMAGE_BLOCK}, "
                   f"{IMAGE_SIZE // IMAGE_BLOCK}), generator=torch.Generator().manual_seed({IMAGE_SEED}), "
                   f"dtype=torch.uint8); images = images_u8.repeat_interleave({IMAGE_BLOCK}, -2)"
                   f".repeat_interleave({IMAGE_BLOCK}, -1).float() / 255"),
        "points": (f"points = torch.rand(1, {N_POINTS}, 3, generator=torch.Generator().manual_seed({POINT_SEED}))"
                   " * 2 - 1; points[0, :8] = corners of [-1,1]^3 (x slowest, -1 before 1); points[0, 8] = 0"),
        "cameras": "src.utils.camera_util.get_zero123plus_input_cameras(batch_size=1, radius=4.0, fov=30.0)",
        "notes": json.dumps(notes, sort_keys=True),
    }
    out = Path(args.out)
    save_file(golden, str(out), metadata=meta)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {len(golden)} tensors)")
    print(json.dumps(notes, indent=1))


if __name__ == "__main__":
    main()
