"""The app in a real browser: headless system Chromium driven by Playwright uploads a scene, reads the
caption and its word maps, asks a question, reads the answers and their map, sees the out-of-domain
warning, gets a clear message (no traceback) for a non-image upload, and saves test-artifacts/app.png."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.scripts import load_script

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.browser


def _screenshot_module():
    return load_script("screenshot", "mmapp_screenshot")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from tests.support.tiny import make_tiny_checkpoints
    from mmapp.app.ui import build_demo, launch_demo
    from mmapp.inference import Captioner, VQAModel

    folder = tmp_path_factory.mktemp("browser")
    cap_path, vqa_path = make_tiny_checkpoints(folder, captioner_ood_threshold=-1.0)
    captioner = Captioner.from_checkpoint(cap_path, "cpu")
    vqa = VQAModel.from_checkpoint(vqa_path, "cpu", encoder=captioner.encoder)
    demo = build_demo(captioner, vqa, checkpoints={"captioner": cap_path, "vqa": vqa_path})
    _, url, _ = launch_demo(demo, port=_screenshot_module().free_port(), prevent_thread_lock=True, quiet=True)
    yield url, folder
    demo.close()


def test_caption_and_answer_in_chromium(app_url):
    if shutil.which("chromium") is None:
        pytest.skip("chromium not installed: the browser test did not run (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from tests.support.tiny import write_scene

    shot = _screenshot_module()
    url, folder = app_url
    scene = write_scene(folder / "scene.png", seed=3)
    not_image = folder / "notes.png"
    not_image.write_text("this is text, not a picture")
    with sync_playwright() as playwright:
        browser = shot.launch_browser(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        shown = shot.drive_app(page, url, scene, "what color is the circle?", REPO / "test-artifacts" / "app.png")

        assert shown["caption"].strip() and "log-probability" in shown["caption"]
        words = shown["caption"].splitlines()[0].split()
        assert shown["word_maps"] >= len(words) > 0  # one overlay per caption word
        assert shown["answer_maps"] >= 1 and shown["answers"].count("%") == 5
        assert "Out of domain" in shown["ood"] and "Train on your own data" in shown["ood"]
        assert page.locator("#models-panel").count() == 1

        page.locator("#image-input button[aria-label='Remove Image']").first.click()
        page.locator("#image-input input[type=file]").set_input_files(str(not_image))
        toast = page.get_by_text("is not an image file PIL can read")
        toast.first.wait_for(timeout=30_000)
        body = page.locator("body").inner_text()
        assert "Traceback" not in body and "notes.png is not an image file" in body
        browser.close()
    assert (REPO / "test-artifacts" / "app.png").stat().st_size > 10_000
