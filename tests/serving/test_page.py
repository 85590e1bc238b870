"""The web page in a real headless browser (Debian's chromium driven by Playwright) against a real server."""
import os
import shutil

import pytest

from prodrec.serving import BatchingEmbedder, GalleryService, create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "page-token"


def browser_or_skip():
    """Playwright's chromium on the system executable; skip without one, except in CI (where .ci/run installs it)."""
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "playwright is not installed (pip install playwright; never `playwright install`)"
    if problem is None and not os.path.exists(CHROMIUM):
        problem = "no chromium: apt-get install -y --no-install-recommends chromium fonts-dejavu-core"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {problem}")
        pytest.skip(problem)
    return sync_playwright


def test_recognize_add_and_remove_in_the_page(shop_gallery, tmp_path, live_server):
    sync_playwright = browser_or_skip()
    shutil.copytree(shop_gallery[0], tmp_path / "gallery")
    model, splits = shop_gallery[1], shop_gallery[2]
    service = GalleryService(tmp_path / "gallery", BatchingEmbedder(model))
    try:
        with live_server(create_app(service, token=TOKEN)) as server, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=["--disable-dev-shm-usage"])
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('health').textContent.includes('products')")

            page.set_input_files("#file", splits.query.paths[0])
            page.wait_for_selector("#matches .match img")
            page.wait_for_function("[...document.querySelectorAll('#matches img')].every(i => i.complete)")
            widths = page.eval_on_selector_all("#matches img", "images => images.map(i => i.naturalWidth)")
            assert len(widths) == 5 and all(width > 0 for width in widths)  # the thumbnails loaded
            assert page.locator(".region").count() == 1 and page.inner_text("#answer")

            page.click("#tab-products")
            page.wait_for_selector("#product-rows tr")
            page.fill("#token", TOKEN)
            page.fill("#add-label", "page-sku")
            page.fill("#add-name", "Added in the page")
            page.set_input_files("#add-images", [splits.gallery.paths[0], splits.gallery.paths[1]])
            page.click("#add-form button[type=submit]")
            page.wait_for_function("document.getElementById('add-status').textContent.startsWith('added 2')")
            page.wait_for_selector("#product-rows button[data-label='page-sku']")
            assert "page-sku" in {product["label"] for product in service.products()}

            page.click("#product-rows button[data-label='page-sku']")
            page.wait_for_selector("#product-rows button[data-label='page-sku']", state="detached")
            assert "page-sku" not in {product["label"] for product in service.products()}
            browser.close()
    finally:
        service.close()
