"""Open every shipped UI workflow in ComfyUI's real web frontend and save a screenshot of each.

    python tools/frontend_screenshots.py --out shots/                       # ComfyUI 0.30.0, 1280x720
    python tools/frontend_screenshots.py --out shots/ --host 0.3.75 --size 1920x1080
    python tools/frontend_screenshots.py --out shots/ --chromium /usr/bin/chromium
    python tools/frontend_screenshots.py --out shots/ --template-browser    # the template browser instead

``--template-browser`` opens *Browse Templates*, picks this pack's category, prints the title of each
card the browser shows (one JSON object), saves a screenshot of the dialog, then opens the first
walkthrough's card and checks that its whole graph was loaded; it exits 1 when a title is not the
workflow's own (``extra.partgen.title`` as its file name, see ``partgen_tools.workflow_format``).

What it uses, all from the package registries: the ComfyUI host the tests use (``partgen_tools/comfyui_host.py``
unpacks it into ``.cache/``), the ``comfyui-frontend-package`` version that host's requirements pin
(downloaded into ``.cache/frontend-<version>/``), Playwright for Python (``pip install playwright``)
driving Debian's Chromium (``apt-get install -y chromium``; Playwright's own browser download is not
needed). The server runs on 127.0.0.1 with this pack and no models; each workflow is loaded with the
frontend's own ``app.loadGraphData``, as opening the file does, and shown in its saved view
(``extra.ds``). Look at the PNGs: nothing may overlap and the notes must be on screen
(``tests/test_workflow_layout.py`` checks the saved geometry without a browser).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from partgen_tools import comfyui_host  # noqa: E402
from partgen_tools.workflow_format import (  # noqa: E402
    API_SUFFIX, EXAMPLE_FOLDER, api_twin_path, template_file_name, ui_workflow_files)

logger = logging.getLogger("frontend_screenshots")

# First-run dialogs the frontend would put over the canvas for a new user.
QUIET_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.Workflow.ShowMissingNodesWarning": False,
}


def frontend_static(version: str, timeout_s: float = 600.0) -> Path:
    """``.cache/frontend-<version>/static``: the frontend wheel's built files, downloaded once."""
    target = comfyui_host.CACHE_DIR / f"frontend-{version}"
    static = target / "static"
    if (static / "index.html").is_file():
        return static
    comfyui_host.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=comfyui_host.CACHE_DIR, prefix=".frontend-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "-d", tmp, f"comfyui-frontend-package=={version}"],
                       check=True, timeout=timeout_s, stdin=subprocess.DEVNULL, capture_output=True)
        (wheel,) = Path(tmp).glob("comfyui_frontend_package-*.whl")
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(wheel) as zf:
            prefix = "comfyui_frontend_package/static/"
            for info in zf.infolist():
                if info.is_dir() or not info.filename.startswith(prefix):
                    continue
                dest = (unpacked / info.filename[len(prefix):]).resolve()
                if unpacked.resolve() not in dest.parents:
                    raise RuntimeError(f"unsafe path in {wheel.name}: {info.filename}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        os.replace(unpacked, static)
    return static


@contextlib.contextmanager
def frontend_page(host: comfyui_host.ComfyUIHost, size: tuple[int, int], chromium: str) -> Iterator[Any]:
    """A Playwright page showing ComfyUI's real frontend, served by ``host`` with this pack on 127.0.0.1."""
    from playwright.sync_api import sync_playwright

    static = frontend_static(host.frontend_version)
    with tempfile.TemporaryDirectory(prefix="partgen-frontend-") as tmp:
        paths = comfyui_host.make_base_dir(Path(tmp), with_models=False)
        paths["web"] = static
        settings = paths["user"] / "default" / "comfy.settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(QUIET_SETTINGS))
        server = comfyui_host.ComfyUIServer(comfyui_host.comfyui_root(host), paths).start(timeout_s=300)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": size[0], "height": size[1]})
                page.goto(server.url, wait_until="networkidle", timeout=180_000)
                page.wait_for_function("() => window.app && window.app.graph", timeout=180_000)
                page.keyboard.press("Escape")  # any dialog left open
                try:
                    yield page
                finally:
                    browser.close()
        finally:
            server.stop()


def screenshot_workflows(out_dir: Path, host: comfyui_host.ComfyUIHost, size: tuple[int, int], chromium: str,
                         settle_ms: int = 2500) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    shots = []
    with frontend_page(host, size, chromium) as page:
        for ui_file in ui_workflow_files(REPO_ROOT / EXAMPLE_FOLDER):
            workflow = json.loads(ui_file.read_text())
            page.evaluate("wf => window.app.loadGraphData(wf)", workflow)
            page.wait_for_timeout(settle_ms)
            shot = out_dir / f"{api_twin_path(ui_file, workflow).name[:-len(API_SUFFIX)]}-{host.version}-{size[0]}x{size[1]}.png"
            page.screenshot(path=str(shot))
            shots.append(shot)
            logger.info("wrote %s", shot)
    return shots


def template_browser(out_dir: Path, host: comfyui_host.ComfyUIHost, size: tuple[int, int], chromium: str,
                     settle_ms: int = 3000) -> dict:
    """What *Browse Templates* shows for this pack: the card titles, a screenshot, and whether opening a
    card loads the whole workflow (its file name has spaces and parentheses: the URL must carry them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ui_files = ui_workflow_files(REPO_ROOT / EXAMPLE_FOLDER)
    expected = sorted(json.loads(p.read_text())["extra"]["partgen"]["title"] for p in ui_files)
    report: dict = {"host": host.version, "frontend": host.frontend_version, "expected_titles": expected}
    with frontend_page(host, size, chromium) as page:
        page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        dialog = page.get_by_role("dialog").first
        dialog.wait_for(timeout=60_000)
        # the pack's own category (its folder name under custom_nodes), in the dialog's navigation
        dialog.get_by_text(comfyui_host.PACK_DIR_NAME, exact=True).first.click()
        page.wait_for_timeout(settle_ms)
        cards = dialog.locator('[data-testid^="template-workflow-"]')
        report["shown_titles"] = sorted(cards.locator("h3").all_inner_texts())
        shot = out_dir / f"template-browser-{host.version}-{size[0]}x{size[1]}.png"
        page.screenshot(path=str(shot))
        report["screenshot"] = str(shot)
        first = ui_files[0]
        workflow = json.loads(first.read_text())
        cards.filter(has=page.locator("h3", has_text=first.stem)).first.click()
        page.wait_for_function("n => window.app.graph && window.app.graph.nodes.length === n",
                               arg=len(workflow["nodes"]), timeout=60_000)
        report["opened"] = {"card": first.stem, "nodes": page.evaluate("() => window.app.graph.nodes.length")}
    # a title as the browser may show it: the file name (see workflow_format.template_file_name)
    report["titles_match"] = report["shown_titles"] == sorted(p.stem for p in ui_files) and \
        [template_file_name(t)[:-len(".json")] for t in expected] == sorted(p.stem for p in ui_files)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument("--host", default=comfyui_host.HOST_0_30_0.version, choices=[h.version for h in comfyui_host.HOSTS])
    parser.add_argument("--size", default="1280x720", help="browser window, WIDTHxHEIGHT")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--template-browser", action="store_true",
                        help="read and screenshot the template browser's cards for this pack instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    width, height = (int(v) for v in args.size.lower().split("x"))
    host = {h.version: h for h in comfyui_host.HOSTS}[args.host]
    if args.template_browser:
        report = template_browser(args.out, host, (width, height), args.chromium)
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0 if report["titles_match"] else 1
    for shot in screenshot_workflows(args.out, host, (width, height), args.chromium):
        print(shot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
