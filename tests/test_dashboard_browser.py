"""The dashboard's page in headless Chromium, against a real worker and a real
``miniq dashboard``: what a person sees and clicks. Skipped where Chromium,
chromedriver or selenium is missing, unless MINIQ_REQUIRE_BROWSER=1 (CI) makes
that a failure. MINIQ_SCREENSHOT_DIR=docs also saves the overview as docs/dashboard.png."""
import os
import shutil

import pytest

from tests import tasks
from tests.conftest import app_on, module_worker, start_dashboard, wait_for

T = 20  # seconds for any one wait
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1200,760")


def _chrome(profile):
    """A headless Chromium under chromedriver; skips (or fails, where required) if absent."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (webdriver and browser and driver):
        missing = "selenium" if webdriver is None else "chromium" if not browser else "chromedriver"
        if os.environ.get("MINIQ_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{missing} is missing and MINIQ_REQUIRE_BROWSER=1")
        pytest.skip(f"{missing} is missing")
    options = webdriver.ChromeOptions()
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.binary_location = browser
    return webdriver.Chrome(options=options, service=Service(driver))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chrome = _chrome(tmp_path_factory.mktemp("chromium"))
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    with module_worker(tmp_path_factory, "dashboard-browser") as worker:
        yield worker


@pytest.fixture(scope="module")
def dashboard(worker, tmp_path_factory):
    proc, url = start_dashboard(worker[0], tmp_path_factory.mktemp("dash") / "dashboard.log")
    yield url
    proc.stop()


@pytest.fixture
def app(worker, monkeypatch):
    yield from app_on(worker, monkeypatch)


@pytest.fixture
def page(browser, dashboard):
    """open(fragment) shows that view; find(css) waits for an element and returns it.
    The page redraws what it shows at each poll: an element found may be gone a moment
    later, so each wait tries again on a stale one."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    class Page:
        wait = WebDriverWait(browser, T, poll_frequency=0.05,
                             ignored_exceptions=[StaleElementReferenceException])
        driver = browser

        def open(self, fragment):
            browser.get(dashboard + fragment)

        def find(self, css, text=""):
            """The first element matching css whose text contains text, once there is one."""
            def found(_):
                return next((e for e in browser.find_elements(By.CSS_SELECTOR, css)
                             if text in e.text), None)
            return self.wait.until(found, f"{css} with {text!r}")

        def click(self, css, text=""):
            self.wait.until(lambda _: self.find(css, text).click() or True, f"click {css}")

        def confirm(self):
            self.wait.until(shown.alert_is_present()).accept()

        def no_alert(self):
            return not shown.alert_is_present()(browser)
    return Page()


def test_a_failed_tasks_traceback_is_one_click_from_the_list(app, page, tmp_path):
    failed = tasks.fail.delay("<script>alert(1)</script>")
    with pytest.raises(ValueError):
        failed.get(timeout=T)
    page.open("#/tasks?state=FAILURE")
    page.find("td.mono", '["<script>alert(1)</script>"]')  # the argument, as text
    page.click("a", "tests.tasks.fail")
    traceback = page.find("#traceback", "ValueError: <script>alert(1)</script>")
    assert "raise ValueError(message)" in traceback.text
    page.find("pre.FAILURE", "ValueError: <script>alert(1)</script>")
    assert page.no_alert() and not page.driver.find_elements("css selector", "main script")
    page.driver.save_screenshot(str(tmp_path / "failed-task.png"))


def test_the_progress_bar_moves(app, page):
    moving = tasks.progress.delay(100, 0.1)
    page.open(f"#/task/{moving.id}")
    def bar(driver):
        return driver.execute_script("const bar = document.querySelector('progress');"
                                     " return bar && [bar.value, bar.max]")
    first, top = page.wait.until(bar, "a progress bar")
    assert top == 100 and 0 <= first < 100
    page.wait.until(lambda driver: bar(driver)[0] > first, "the bar's value grows")
    moving.revoke(terminate=True)


def test_terminate_and_send_again_from_the_page(app, page):
    running = tasks.sleep.delay(60)
    page.open(f"#/task/{running.id}")
    page.find("dd span.STARTED")
    page.click("button", "Terminate")
    page.confirm()
    page.find("dd span.REVOKED")
    wait_for(lambda: running.state == "REVOKED", T, message="revoked in the database")
    page.click("button#retry")  # a revoked task can be sent again
    page.confirm()
    page.wait.until(lambda driver: running.id not in driver.current_url, "the new task's page")
    again = app.AsyncResult(page.driver.current_url.rsplit("/", 1)[1])
    assert again.name == "tests.tasks.sleep" and again.args == [60]
    page.click("button", "Terminate")
    page.confirm()
    wait_for(lambda: again.state == "REVOKED", T, message="the new one revoked too")


def test_the_overview_lists_the_worker_and_the_queue_counts(app, worker, page, tmp_path):
    for i in range(6):
        tasks.add.delay(i, i).get(timeout=T)
    with pytest.raises(ValueError):
        tasks.fail.delay().get(timeout=T)
    tasks.add.apply_async((1, 2), countdown=600)
    busy = tasks.progress.delay(100, 0.1)
    page.open("#/")
    page.find("td", str(worker[1].pid))
    page.find("a", "tests.tasks.progress")  # what the worker runs now

    def counts(driver):  # queued, scheduled, running; succeeded and failed in the last hour
        cells = page.find("#queues tr", "celery").find_elements("css selector", "td")
        return [int(cell.text) for cell in cells[1:6]]
    shown = page.wait.until(lambda driver: counts(driver)[:3] == [0, 1, 1] and counts(driver),
                            "the queue's counts")
    assert shown[3] >= 6 and shown[4] >= 1
    page.find("svg polyline.succeeded")
    page.driver.save_screenshot(str(tmp_path / "overview.png"))
    if os.environ.get("MINIQ_SCREENSHOT_DIR"):
        page.driver.save_screenshot(os.path.join(os.environ["MINIQ_SCREENSHOT_DIR"], "dashboard.png"))
    page.driver.set_window_size(390, 760)  # a phone: the page itself never scrolls sideways
    try:
        assert page.driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        page.driver.set_window_size(1200, 760)
    busy.revoke(terminate=True)
