"""The HTTP API's docs in headless Chromium, with nothing but this server to load from: ``/docs``
(Swagger UI) lists the operations, ``/redoc`` renders them. Cheap: an empty workspace, the app
served by uvicorn in a thread, no sweep. Screenshots under ``$PERFTUNE_TEST_ARTIFACTS``."""

from __future__ import annotations

import threading
import time

import pytest
from test_e2e_ui import _artifacts, _free_port, browser  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def api_url(tmp_path_factory):
    uvicorn = pytest.importorskip("uvicorn")
    from perftune.server import create_app
    from perftune.settings import Workspace

    app = create_app(Workspace.resolve(tmp_path_factory.mktemp("docs") / "ws"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.config.port}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


def _loaded(driver) -> list[str]:
    """What the page loaded: scripts, styles, the schema (ReDoc also tries to show its
    attribution logo from cdn.redoc.ly, an image it drops when that fails, as offline)."""
    return driver.execute_script("return performance.getEntriesByType('resource')"
                                  ".filter(e => e.initiatorType !== 'img').map(e => e.name)")  # fmt: skip


def test_docs_render_offline(browser, api_url):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait, shots = WebDriverWait(browser, 30), _artifacts()
    try:
        browser.get(api_url + "/docs")
        # Swagger UI's block of an operation: its method and path.
        op = wait.until(ec.visibility_of_element_located((
            By.XPATH, "//*[contains(@class, 'opblock-summary')][.//*[@data-path='/v1/best-configs']]")))  # fmt: skip
        assert op.text.split()[:2] == ["GET", "/v1/best-configs"], op.text
        assert browser.find_element(By.CSS_SELECTOR, ".info .title").text.split()[0] == "perftune"
        browser.save_screenshot(str(shots / "api-docs.png"))
        loaded = _loaded(browser)
        browser.get(api_url + "/redoc")
        # ReDoc's side menu lists the operations by summary; the page shows the paths.
        wait.until(lambda d: "/v1/best-configs" in d.find_element(By.TAG_NAME, "body").text)
        assert "Best Configs" in browser.find_element(By.TAG_NAME, "body").text
        browser.save_screenshot(str(shots / "api-redoc.png"))
        loaded += _loaded(browser)
        assert {"/docs-assets/swagger-ui-bundle.js", "/docs-assets/redoc.standalone.js", "/openapi.json"} <= {
            u.removeprefix(api_url) for u in loaded}  # fmt: skip
        assert all(u.startswith(api_url + "/") for u in loaded), loaded
    except Exception:
        browser.save_screenshot(str(shots / "api-docs-failure.png"))
        raise
    finally:
        print(f"\nscreenshots: {shots}/api-*.png")
