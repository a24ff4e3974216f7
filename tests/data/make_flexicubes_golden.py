#!/usr/bin/env python
"""Golden outputs of the UPSTREAM FlexiCubes (InstantMesh's copy) for parity tests of ours.

Upstream is TencentARC/InstantMesh ``src/models/geometry/rep_3d/`` (Apache-2.0; FlexiCubes by NVIDIA).
It is NOT part of this repository: put its ``flexicubes.py`` and ``tables.py`` (optionally the whole
``rep_3d`` folder) into a folder of your own and point ``--upstream`` at it:

    mkdir -p /tmp/upstream_flexicubes
    for f in flexicubes.py tables.py; do
        git -C <InstantMesh mirror> show HEAD:src/models/geometry/rep_3d/$f > /tmp/upstream_flexicubes/$f
    done
    python tests/data/make_flexicubes_golden.py --upstream /tmp/upstream_flexicubes --out tests/data \
        --upstream-commit <sha>

What runs upstream, unmodified (the folder is imported as a package so that its ``from .tables import *``
resolves; no file is edited): ``FlexiCubesGeometry(grid_res=R, scale=2.1)`` as InstantMesh builds it,
reduced to what matters for extraction (``FlexiCubes(device='cpu', weight_scale=0.5)``, then
``verts, indices = construct_voxel_grid(R)``, ``verts * scale``), and ``get_mesh(...,
is_training=False)``'s call, literally::

    fc(v_deformed, sdf, indices, R, beta_fx12=w[:, :12], alpha_fx8=w[:, 12:20], gamma_f=w[:, 20], training=False)

Everything on CPU, float32. Inputs per case, from ``torch.Generator().manual_seed(seed)`` in this
order: the SDF noise, the deformation ``randn`` (InstantMesh: ``v + tanh(d) / (R * 4)``), the weights
``0.1 * randn(R^3, 21)`` (the weight head's scale), rounded to float16 values so that they are stored
exactly in half the space (upstream still computes in float32). Only the rows of surface cubes are stored: the script
checks that upstream's output does not change when every other row is redrawn.

Also stored: upstream's ``dmc_table``, ``num_vd_table`` and ``check_table`` (our generated tables are
compared to them), and sha256 hashes of upstream's grid (``verts * 2.1`` float32, ``indices`` int64) at
the case resolutions and at ``--grid-hash-resolutions`` (default 64 and 128; 128 takes ~20 s and ~6 GB).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import logging
import platform
import sys
import types
from pathlib import Path

import torch

SCALE = 2.1  # configs/instant-mesh-{base,large}.yaml grid_scale
DEFORMATION_MULTIPLIER = 4.0  # lrm_mesh.py: deformation = tanh(d) / (grid_res * 4)
WEIGHT_HEAD_SCALE = 0.1  # synthesizer_mesh.py: weight = net_weight(...) * 0.1
CASES = {
    # A lumpy sphere with SDF noise: closed surface strictly inside the grid (watertight output).
    "sphere16": dict(resolution=16, seed=1601, radius=0.6, noise=0.04, zero_fraction=0.0),
    "sphere24": dict(resolution=24, seed=2402, radius=0.7, noise=0.08, zero_fraction=0.0),
    # Pure noise with 10 % exact zeros: every DMC case incl. C16/C19 inversions, 2-4 dual vertices per
    # cube, crossings on the grid's outer faces (no quads there) and sdf == 0 corners.
    "noise12": dict(resolution=12, seed=1203, radius=None, noise=1.0, zero_fraction=0.1),
}
GRID_HASH_RESOLUTIONS = (64, 128)
logger = logging.getLogger("make_flexicubes_golden")


def load_upstream(folder: Path) -> types.ModuleType:
    """Import ``folder/flexicubes.py`` as a submodule of a package rooted at ``folder``."""
    name = "upstream_flexicubes_pkg"
    init = folder / "__init__.py"
    if init.exists():
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    else:
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    return importlib.import_module(f"{name}.flexicubes")


def sha256_tensor(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def make_inputs(verts: torch.Tensor, num_cubes: int, resolution: int, seed: int, radius, noise: float, zero_fraction: float):
    generator = torch.Generator().manual_seed(seed)
    if radius is None:
        sdf = noise * torch.randn(verts.shape[0], generator=generator)
    else:
        # An ellipsoid-ish blob: anisotropic radius so that the surface is not grid-symmetric.
        stretched = verts * torch.tensor([1.0, 1.15, 0.9])
        sdf = stretched.norm(dim=-1) - radius + noise * torch.randn(verts.shape[0], generator=generator)
    if zero_fraction > 0:
        sdf[torch.rand(verts.shape[0], generator=generator) < zero_fraction] = 0.0
    deformation = torch.tanh(torch.randn(verts.shape, generator=generator)) / (resolution * DEFORMATION_MULTIPLIER)
    # Rounded through float16 so that the stored float16 copy is exact (keeps the file under 1 MB).
    weights = (WEIGHT_HEAD_SCALE * torch.randn((num_cubes, 21), generator=generator)).half().float()
    return sdf, verts + deformation, weights


def run_case(fc_module, name: str, settings: dict) -> tuple[dict[str, torch.Tensor], dict]:
    resolution = settings["resolution"]
    fc = fc_module.FlexiCubes(device="cpu", weight_scale=0.5)
    verts, indices = fc.construct_voxel_grid(resolution)
    verts = verts * SCALE
    sdf, v_deformed, weights = make_inputs(verts, indices.shape[0], resolution, settings["seed"], settings["radius"],
                                           settings["noise"], settings["zero_fraction"])

    def extract(w: torch.Tensor):
        return fc(v_deformed, sdf, indices, resolution, beta_fx12=w[:, :12], alpha_fx8=w[:, 12:20],
                  gamma_f=w[:, 20], training=False)

    vertices, faces, _ = extract(weights)
    surf_mask, occ = fc._identify_surf_cubes(sdf, indices)
    cube_ids = torch.nonzero(surf_mask).squeeze(1)

    # Rows of non-surface cubes must not matter (ours never sees them): redraw them and compare.
    redrawn = torch.randn(weights.shape, generator=torch.Generator().manual_seed(settings["seed"] + 1))
    redrawn[cube_ids] = weights[cube_ids]
    vertices2, faces2, _ = extract(redrawn)
    assert torch.equal(vertices, vertices2) and torch.equal(faces, faces2), "non-surface weights changed the output"
    vertices3, faces3, _ = extract(weights)
    assert torch.equal(vertices, vertices3) and torch.equal(faces, faces3), "upstream is not deterministic"

    raw_cases = (occ[surf_mask] * fc.cube_corners_idx.unsqueeze(0)).sum(-1)
    resolved = fc._get_case_id(occ, surf_mask, resolution)
    tensors = {
        f"{name}.sdf": sdf,
        f"{name}.vertices_deformed": v_deformed,
        f"{name}.cube_ids": cube_ids,
        f"{name}.weights": weights[cube_ids].half(),  # exact: the weights are float16 values
        f"{name}.out_vertices": vertices,
        f"{name}.out_faces": faces.to(torch.int32),
    }
    stats = dict(
        settings,
        scale=SCALE,
        num_surface_cubes=int(cube_ids.numel()),
        num_ambiguity_flagged=int((fc.check_table[raw_cases][:, 0] == 1).sum()),
        num_cases_inverted=int((raw_cases != resolved).sum()),
        dual_vertices_per_cube={str(int(k)): int(v) for k, v in zip(*torch.unique(fc.num_vd_table[resolved], return_counts=True))},
        num_zero_sdf=int((sdf == 0).sum()),
        out_vertices=list(vertices.shape),
        out_faces=list(faces.shape),
        out_vertices_range=[float(vertices.min()), float(vertices.max())],
        grid_vertices_sha256=sha256_tensor(verts),
        grid_cubes_sha256=sha256_tensor(indices),
    )
    try:
        import trimesh

        stats["watertight"] = bool(trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=False).is_watertight)
    except ImportError:
        pass
    return tensors, stats


def grid_hashes(fc_module, resolution: int) -> dict:
    fc = fc_module.FlexiCubes(device="cpu", weight_scale=0.5)
    verts, indices = fc.construct_voxel_grid(resolution)
    return {"vertices_sha256": sha256_tensor(verts * SCALE), "cubes_sha256": sha256_tensor(indices),
            "num_vertices": int(verts.shape[0]), "num_cubes": int(indices.shape[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", type=Path, required=True, help="folder holding upstream flexicubes.py + tables.py")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--upstream-commit", default="unknown", help="commit of the InstantMesh checkout the files come from")
    parser.add_argument("--grid-hash-resolutions", type=int, nargs="*", default=list(GRID_HASH_RESOLUTIONS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from safetensors.torch import save_file

    fc_module = load_upstream(args.upstream.resolve())
    tensors: dict[str, torch.Tensor] = {}
    case_stats = {}
    for name, settings in CASES.items():
        case_tensors, case_stats[name] = run_case(fc_module, name, settings)
        tensors.update(case_tensors)
        logger.info("%s: %s", name, json.dumps(case_stats[name]))

    tables = fc_module.FlexiCubes(device="cpu")
    tensors["tables.dmc"] = tables.dmc_table.to(torch.int8)
    tensors["tables.num_vd"] = tables.num_vd_table.to(torch.int8)
    tensors["tables.check"] = tables.check_table.to(torch.int16)

    hashes = {str(r): grid_hashes(fc_module, r) for r in args.grid_hash_resolutions}
    for name, stats in case_stats.items():
        hashes[str(stats["resolution"])] = {"vertices_sha256": stats["grid_vertices_sha256"],
                                            "cubes_sha256": stats["grid_cubes_sha256"]}
    logger.info("grid hashes: %s", json.dumps(hashes))

    files = {f: hashlib.sha256((args.upstream / f).read_bytes()).hexdigest()
             for f in ("flexicubes.py", "tables.py") if (args.upstream / f).exists()}
    metadata = {
        "cases": json.dumps(case_stats),
        "grid_hashes": json.dumps(hashes),
        "grid_scale": json.dumps(SCALE),
        "upstream": json.dumps({"repository": "TencentARC/InstantMesh", "commit": args.upstream_commit,
                                "path": "src/models/geometry/rep_3d/", "files_sha256": files}),
        "versions": json.dumps({"python": platform.python_version(), "torch": torch.__version__}),
        "storage": "out_faces int32 (upstream returns int64); weights float16 (exact: drawn as float16 values); "
                   "tables int8/int16",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "flexicubes_golden.safetensors"
    tmp = target.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    tmp.replace(target)
    logger.info("wrote %s (%d bytes)", target, target.stat().st_size)


if __name__ == "__main__":
    main()
