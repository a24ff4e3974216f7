"""Mutation testing of the segmentation, selection, completion and export code: do the tests notice bugs?

    python tools/mutation_test.py              # every mutation, prints the survival table
    python tools/mutation_test.py --list       # the mutations, and which are stale, without running tests
    python tools/mutation_test.py --only select-point-swap nms-all-earlier

Each mutation is one plausible bug (an off-by-one, a swapped order, a dropped term, a skipped step)
written as an exact text replacement in one module. For each, the tracked files are copied once into a
temporary folder, the one replacement is applied there (the working tree is never touched), and only
the test files that cover that function run (tier 1, tiny checkpoints written once and reused through
``PARTGEN_TINY_MODELS_DIR``). A mutation is *killed* when those tests fail and *survives* when they
pass; *stale* means its text no longer occurs exactly once (the code moved: update the mutation).
The exit status is 1 when any mutation survives or is stale, so CI can run it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    key: str
    path: str  # module, relative to the repository root
    function: str
    description: str
    original: str
    mutated: str
    tests: tuple[str, ...]  # pytest arguments: files, node ids
    equivalent: str = ""  # why no input a user can give tells the mutant apart, when that is so


_SEG = "partgen_models/segmentation/"
_COMP = "partgen_models/completion/complete.py"
_EXPORT = "partgen_models/assembly/export.py"
_SEG_PINNED = "tests/test_segmentation_pinned.py"
_COMP_PINNED = "tests/test_completion_pinned.py"
_EXPORT_PINNED = "tests/test_export_pinned.py"
_SELECT = (_SEG_PINNED, "tests/test_segmentation.py::test_selection_modes",
           "tests/test_segmentation.py::test_bad_selections_list_the_choices",
           "tests/test_segmentation.py::test_color_selection_uses_the_first_sample")
_SEGMENT = (_SEG_PINNED + "::test_segment_views_decodes_with_the_checkpoints_palette_inside_the_object",
            "tests/test_segmentation.py::test_samples_are_batched_and_ranked")

MUTATIONS: tuple[Mutation, ...] = (
    # --- palette.decode_colors
    Mutation("min-area-all-pixels", _SEG + "palette.py", "palette.decode_colors",
             "min_area share taken over all pixels instead of the object's",
             "total = max(int(inside.sum()) if inside is not None else int(foreground.sum()), 1)",
             "total = max(int(ids.numel()), 1)", (_SEG_PINNED, "tests/test_palette.py")),
    Mutation("min-area-off-object", _SEG + "palette.py", "palette.decode_colors",
             "off-object paint kept (inside ignored)",
             "    if inside is not None:\n        ids[~inside] = -1\n", "", (_SEG_PINNED,)),
    Mutation("majority-filter-skipped", _SEG + "palette.py", "palette.decode_colors",
             "the 3x3 majority filter skipped", "if smoothing > 1:", "if False:",
             (_SEG_PINNED, "tests/test_palette.py")),
    Mutation("min-area-strict", _SEG + "palette.py", "palette.decode_colors",
             "a colour at exactly min_area dropped too", "(counts < min_area * total)", "(counts <= min_area * total + 1)",
             (_SEG_PINNED, "tests/test_palette.py")),
    # --- segment.segment_views
    Mutation("segment-no-object-mask", _SEG + "segment.py", "segment.segment_views",
             "samples decoded without the object mask",
             "ids = decode_colors(sample, options.min_area, model.palette, inside=inside)",
             "ids = decode_colors(sample, options.min_area, model.palette)",
             _SEGMENT),
    Mutation("segment-default-palette", _SEG + "segment.py", "segment.segment_views",
             "the segmentation does not carry the checkpoint's palette",
             "layout.name, palette=tuple(model.palette))", "layout.name)",
             _SEGMENT),
    # --- proposals.rank_proposals
    Mutation("nms-all-earlier", _SEG + "proposals.py", "proposals.rank_proposals",
             "NMS against every earlier-ranked segment instead of the kept ones",
             "for other in kept)", "for other in order[: order.index(index)])",
             (_SEG_PINNED, "tests/test_palette.py")),
    Mutation("votes-count-self", _SEG + "proposals.py", "proposals.rank_proposals",
             "a segment votes for itself", "(iou > iou_threshold).sum(dim=1) - 1", "(iou > iou_threshold).sum(dim=1)",
             (_SEG_PINNED, "tests/test_palette.py")),
    Mutation("nms-threshold-inclusive", _SEG + "proposals.py", "proposals.rank_proposals",
             "NMS suppresses at IoU equal to the threshold", "iou[index, other] <= iou_threshold",
             "iou[index, other] < iou_threshold", (_SEG_PINNED, "tests/test_palette.py"),
             equivalent="with ε-smoothed IoU, (i + ε) / (u + ε) never equals 0.5 for whole pixel counts, and the "
                        "threshold is not a node setting"),
    # --- select
    Mutation("select-index-bound", _SEG + "select.py", "select indices",
             "bound check off by one (index == count)", "bad = [i for i in group if i >= count]",
             "bad = [i for i in group if i > count]", _SELECT),
    Mutation("select-point-swap", _SEG + "select.py", "select point mode", "x and y swapped",
             "row, col = min(int(y * height), height - 1), min(int(x * width), width - 1)",
             "row, col = min(int(x * height), height - 1), min(int(y * width), width - 1)",
             _SELECT),
    Mutation("select-merge-intersects", _SEG + "select.py", "select indices", "'a+b' merges by intersection",
             "masks = torch.stack([segmentation.masks[group].any(dim=0) for group in groups])",
             "masks = torch.stack([segmentation.masks[group].all(dim=0) for group in groups])",
             _SELECT),
    Mutation("select-names-dropped", _SEG + "select.py", "select names mode",
             "names matching nothing silently dropped", "    if unmatched:", "    if False:",
             _SELECT),
    Mutation("select-color-default-palette", _SEG + "select.py", "select colour mode",
             "colour decoded with the default palette", "palette = segmentation.palette", "palette = PALETTE",
             _SELECT),
    # --- cameras
    Mutation("camera-fov-v12", "partgen_models/cameras.py", "cameras.LAYOUTS v1.2", "FoV changed",
             "(20.0, -10.0) * 3, 30.0)", "(20.0, -10.0) * 3, 49.1)", ("tests/test_cameras.py",)),
    # --- completion
    Mutation("completion-swap-masked-context", _COMP, "complete.complete_parts",
             "masked-part and context latents swapped in the UNet input",
             "return torch.cat([masked_part, context, mask], dim=1)", "return torch.cat([context, masked_part, mask], dim=1)",
             (_COMP_PINNED,)),
    Mutation("completion-no-context-ignored", _COMP, "complete.complete_parts", "use_context=False ignored",
             "        context = torch.zeros_like(context)  # PartGen's \"no context\" ablation\n",
             "        pass\n", (_COMP_PINNED,)),
    Mutation("latent-mask-min-pool", _COMP, "complete._latent_masks", "min-pool instead of max-pool",
             "return F.max_pool2d(_grids(masks.float()[..., None], rows, cols), scale)",
             "return -F.max_pool2d(-_grids(masks.float()[..., None], rows, cols), scale)", (_COMP_PINNED,)),
    Mutation("training-free-current-sigma", _COMP, "complete.complete_training_free",
             "known latents re-noised to the current sigma instead of the next",
             'sigma_next = float(sigmas["schedule"][step + 1])', 'sigma_next = float(sigmas["schedule"][step])',
             (_COMP_PINNED,)),
    Mutation("training-free-white-input", _COMP, "complete.complete_training_free",
             "conditioning image composited on white whatever the model",
             "background = torch.tensor((float(model.flavour.input_background),) * 3)",
             "background = torch.tensor(WHITE)", (_COMP_PINNED,)),
    Mutation("training-free-white-output", _COMP, "complete.complete_training_free",
             "known views and alpha on white whatever the model",
             "output_background = (float(model.flavour.output_background),) * 3", "output_background = WHITE",
             (_COMP_PINNED,)),
    Mutation("part-seed-ignores-name", _COMP, "complete.part_seed", "every part gets the same seed",
             'return (seed + zlib.crc32(name.encode("utf-8"))) % 2**64', "return seed % 2**64", (_COMP_PINNED,)),
    Mutation("part-views-drop-colours", _COMP, "complete._to_part_views", "display colours dropped",
             "for v in images])\n    return PartViews(images, alpha, views.c2w.clone(), views.fov_deg, views.layout, "
             "background, parts.names,\n                     parts.colors)",
             "for v in images])\n    return PartViews(images, alpha, views.c2w.clone(), views.fov_deg, views.layout, "
             "background, parts.names,\n                     None)", (_COMP_PINNED,)),
    Mutation("whole-object-check", _COMP, "complete.check_part_masks", "a part covering the whole object accepted",
             "if covered >= _WHOLE_OBJECT:", "if covered > 1.0:",
             ("tests/test_completion.py::test_inconsistent_masks_are_explained",)),
    # --- export and checkpoint loading
    Mutation("export-node-file-name", _EXPORT, "export", "node named after the sanitised file name",
             "MeshNode(name=prepared.part.name, positions=",
             "MeshNode(name=prepared.file_name, positions=",
             (_EXPORT_PINNED, "tests/test_export.py")),
    Mutation("export-containment-removed", _EXPORT, "export", "the resolved-path containment check removed",
             "if os.path.commonpath([output_dir, folder]) != str(output_dir):", "if False:",
             (_EXPORT_PINNED, "tests/test_export.py")),
    Mutation("export-dotdot-allowed", _EXPORT, "export.sanitize_prefix", "'..' in the prefix allowed",
             'if any(c == ".." for c in components):', "if False:", (_EXPORT_PINNED, "tests/test_export.py")),
    Mutation("export-explode-inward", _EXPORT, "export.exploded_offsets", "parts pushed towards the centre",
             "direction = (box_low + box_high) / 2 - centre", "direction = centre - (box_low + box_high) / 2",
             ("tests/test_export.py",)),
    Mutation("export-manifest-colour", _EXPORT, "export manifest", "display colour left out of the manifest",
             '            "display_color": list(part.display_color) if part.display_color else None,\n',
             '            "display_color": None,\n',
             (_EXPORT_PINNED,)),
    Mutation("transformers-layout-drops-unknown", "partgen_models/modules.py", "match_transformers_layout",
             "unknown checkpoint keys silently dropped before the strict check",
             "        mapped[key] = value\n", "        if key in expected_keys:\n            mapped[key] = value\n",
             (_EXPORT_PINNED + "::test_an_unknown_checkpoint_key_reaches_the_strict_check",)),
)


def _copy_tracked_files(target: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = REPO / name
        if source.is_file() and not source.is_symlink():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def _run_tests(copy: Path, tests: tuple[str, ...], env: dict, timeout_s: float) -> tuple[bool, str]:
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not tier2 and not tier3", *tests]
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, "timeout"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else done.stderr.strip().splitlines()[-1:]
    return done.returncode == 0, str(summary)


def _run_mutation(mutation: Mutation, copy: Path, env: dict, timeout_s: float):
    path = copy / mutation.path
    text = path.read_text(encoding="utf-8")
    if text.count(mutation.original) != 1:
        return mutation, "stale", f"text found {text.count(mutation.original)} times", 0.0
    path.write_text(text.replace(mutation.original, mutation.mutated), encoding="utf-8")
    began = time.perf_counter()
    try:
        passed, summary = _run_tests(copy, mutation.tests, env, timeout_s)
    finally:
        path.write_text(text, encoding="utf-8")
    seconds = time.perf_counter() - began
    result = "SURVIVED" if passed else "killed"
    print(f"{mutation.key}: {result} ({seconds:.0f} s)", file=sys.stderr, flush=True)
    return mutation, result, summary, seconds


def _first_failure(output: str) -> str:
    return output.split(" in ")[0] if " in " in output else output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="KEY", help="run only these mutations")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutation's test run")
    parser.add_argument("--jobs", type=int, default=2, help="mutations tested at once, each in its own copy")
    args = parser.parse_args(argv)
    selected = [m for m in MUTATIONS if not args.only or m.key in args.only]
    unknown = set(args.only or ()) - {m.key for m in MUTATIONS}
    if unknown:
        parser.error(f"unknown mutation(s) {', '.join(sorted(unknown))}; see --list")
    if args.list:
        stale = 0
        for m in selected:
            found = (REPO / m.path).read_text(encoding="utf-8").count(m.original)
            mark = "" if found == 1 else f"  [stale: text found {found} times]"
            stale += found != 1
            print(f"{m.key:36} {m.function:34} {m.description}{mark}")
        return 1 if stale else 0

    with tempfile.TemporaryDirectory(prefix="partgen-mutation-") as scratch:
        models = Path(scratch) / "tiny-models"
        copies = [Path(scratch) / f"repo-{worker}" for worker in range(max(1, args.jobs))]
        for copy in copies:
            _copy_tracked_files(copy)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(PARTGEN_TINY_MODELS_DIR=str(models), PYTHONDONTWRITEBYTECODE="1")
        subprocess.run([sys.executable, "-c", "import sys; from partgen_models.testing import write_tiny_models; "
                        "write_tiny_models(sys.argv[1])", str(models)], cwd=copies[0],
                       env={**env, "PYTHONPATH": str(copies[0])}, check=True, capture_output=True)
        free = list(copies)
        start = time.perf_counter()

        def run(mutation: Mutation):
            copy = free.pop()
            try:
                return _run_mutation(mutation, copy, {**env, "PYTHONPATH": str(copy)}, args.timeout)
            finally:
                free.append(copy)

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(copies)) as pool:
            rows = list(pool.map(run, selected))

    print("| function | mutation | tests run | result |")
    print("|---|---|---|---|")
    for mutation, result, summary, _seconds in rows:
        tests = " ".join(sorted({t.split("::")[0] for t in mutation.tests if t.startswith("tests/")})).replace("tests/", "")
        shown = result if result != "killed" else f"killed ({_first_failure(summary)})"
        if result == "SURVIVED" and mutation.equivalent:
            shown = f"survived, equivalent: {mutation.equivalent}"
        print(f"| `{mutation.function}` | {mutation.description} | {tests} | {shown} |")
    killed = sum(1 for row in rows if row[1] == "killed")
    equivalent = sum(1 for row in rows if row[1] == "SURVIVED" and row[0].equivalent)
    print(f"\n{killed} of {len(rows)} mutations killed, {equivalent} equivalent survived, "
          f"{len(rows) - killed - equivalent} other survived or stale ({time.perf_counter() - start:.0f} s).")
    return 0 if killed + equivalent == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
