"""Drive the app in headless Chromium (Playwright) and save a screenshot, e.g. ``docs/screenshot.png``.

    python scripts/screenshot.py                      # the shipped checkpoints -> docs/screenshot.png
    python scripts/screenshot.py --tiny --out x.png   # tiny random models (no checkpoints needed)

Uses the system's Chromium (``which chromium``; Debian: apt-get install chromium); never downloads a
browser. ``drive_app`` is shared with ``tests/test_browser.py``.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.support.tiny: the random-weight checkpoints for --tiny


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_browser(playwright: Any) -> Any:
    """Headless system Chromium; ``RuntimeError`` when it is not installed."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("chromium not installed (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)


def _wait_for_image(page: Any, selector: str, timeout_ms: int) -> None:
    """Wait until the first image matching ``selector`` has loaded (scrolled into view: galleries load lazily)."""
    page.wait_for_selector(selector, state="attached", timeout=timeout_ms)
    page.locator(selector).first.scroll_into_view_if_needed(timeout=timeout_ms)
    page.wait_for_function(f"(() => {{ const i = document.querySelector({selector!r}); "
                           "return i && i.complete && i.naturalWidth > 0; })()", timeout=timeout_ms)


def drive_app(page: Any, url: str, image: Path, question: str, screenshot: Path | None = None,
              timeout_ms: int = 60_000) -> dict[str, Any]:
    """Upload ``image``, wait for the caption and its word maps, ask ``question``, wait for the answers and
    their map; returns what the page shows (caption text, answers text, counts of overlay images)."""
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#image-input input[type=file]", state="attached", timeout=timeout_ms)
    page.locator("#image-input input[type=file]").set_input_files(str(image))
    _wait_for_image(page, "#word-maps img", timeout_ms)
    page.locator("#question textarea").fill(question)
    page.locator("#ask-button").click()
    _wait_for_image(page, "#answer-map img", timeout_ms)
    page.wait_for_function("document.querySelector('#answers') && "
                           "document.querySelector('#answers').innerText.includes('%')", timeout=timeout_ms)
    shown = {
        "caption": page.locator("#caption-text").inner_text(),
        "answers": page.locator("#answers").inner_text(),
        "word_maps": page.locator("#word-maps img").count(),
        "answer_maps": page.locator("#answer-map img").count(),
        "ood": page.locator("#ood-warning").inner_text() if page.locator("#ood-warning").is_visible() else "",
    }
    if screenshot is not None:
        page.evaluate("window.scrollTo(0, 0)")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    return shown


def default_image() -> Path:
    from mmapp.app.examples import scene_examples
    from tests.support.tiny import write_scene

    scenes = scene_examples()
    return scenes[0] if scenes else write_scene(Path(tempfile.mkdtemp()) / "scene.png", seed=3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot the app in headless Chromium.")
    parser.add_argument("--captioner", help="captioner checkpoint (default: the shipped one)")
    parser.add_argument("--vqa", help="VQA checkpoint (default: the shipped one)")
    parser.add_argument("--tiny", action="store_true", help="use tiny random models instead of checkpoints")
    parser.add_argument("--image", type=Path, help="image to upload (default: a shapes sample scene)")
    parser.add_argument("--question", default="what color is the circle?")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.png")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from mmapp.app.ui import build_demo, launch_demo
    from mmapp.inference import Captioner, VQAModel, default_checkpoint
    from tests.support.tiny import make_tiny_checkpoints

    if args.tiny:
        cap_path, vqa_path = make_tiny_checkpoints(Path(tempfile.mkdtemp()))
    else:
        cap_path = Path(args.captioner) if args.captioner else default_checkpoint("captioner")
        vqa_path = Path(args.vqa) if args.vqa else default_checkpoint("vqa")
        for path in (cap_path, vqa_path):
            if not path.is_file():
                print(f"screenshot: no checkpoint at {path} (pass --captioner/--vqa, or --tiny)", file=sys.stderr)
                return 2
    captioner = Captioner.from_checkpoint(cap_path, "cpu")
    vqa = VQAModel.from_checkpoint(vqa_path, "cpu", encoder=captioner.encoder)
    demo = build_demo(captioner, vqa, checkpoints={"captioner": cap_path, "vqa": vqa_path})
    _, url, _ = launch_demo(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = launch_browser(playwright)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            shown = drive_app(page, url, args.image or default_image(), args.question, args.out)
            browser.close()
    finally:
        demo.close()
    print(f"caption: {shown['caption'].splitlines()[0]}\nsaved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
