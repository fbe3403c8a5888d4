"""The dashboard in a real browser: Debian's Chromium, driven by Selenium, on a real worker.

A worker with a web token, schedules sent to Kafka, a real HTTP target (one
schedule delivered with history, one refused for good into a dead letter).
The browser signs in, pages through the list, filters it, opens a schedule
(its next instants and history), pauses it with its button, and reads the
dead letters and the cluster. Every page is also checked at a phone's width
(nothing wider than the screen but the tables' own scroll boxes).
Screenshots go to ``test-artifacts/dashboard/`` (``TEST_ARTIFACTS`` moves it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as arrived
from selenium.webdriver.support.wait import WebDriverWait

from tests.support import Clients, HttpTarget, Worker, send_commands

pytestmark = pytest.mark.e2e

TOKEN = "dashboard-token-for-tests"
CLIENTS = Clients(operation="dash", application="ui", group="e2e")
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", REPO / "test-artifacts")) / "dashboard"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PHONE = (390, 844)
DESKTOP = (1280, 900)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless Chromium from the system's packages; nothing is downloaded."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def fits_a_phone(driver: WebDriver, name: str) -> None:
    """At a phone's width the page scrolls down, not sideways (tables scroll in their box)."""
    driver.set_window_size(*PHONE)
    wide = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    shot(driver, f"{name}-phone")
    driver.set_window_size(*DESKTOP)
    assert wide <= 1, f"{name} is {wide}px wider than a phone's screen"


def until(check: Callable[[], Any], driver: WebDriver, timeout: float = 60) -> Any:
    """Reload until ``check`` holds: the worker applies commands a moment after they are sent."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, driver.find_element(By.TAG_NAME, "main").text[-2500:]
        time.sleep(1)
        driver.refresh()


def went(driver: WebDriver, part: str) -> None:
    """Wait until a click has taken the browser to a URL containing ``part``."""
    WebDriverWait(driver, 60).until(arrived.url_contains(part))


def rows(driver: WebDriver, table: str) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, f"table#{table} tbody tr")


def upsert(key: str, **fields: Any) -> dict[str, Any]:
    return {"client": CLIENTS.client(key), "name": f"job {key}", **fields}


async def test_an_operator_uses_the_dashboard_in_chromium(
    make_worker: Any, http_target: HttpTarget, browser: WebDriver
) -> None:
    worker: Worker = make_worker(extra_env={"SCHEDULER_WEB_TOKENS": TOKEN}).start()
    rest = {"type": "rest", "connection": {"host": f"{http_target.url}/ok/watched"}}
    await send_commands(
        worker,
        upsert(
            "watched",
            type="cron",
            schedule="*/2 * * * * *",
            timezone="Asia/Seoul",
            max_fires=500,
            task={**rest, "history_check": True},
        ),
        upsert(
            "refused",
            type="now",
            task={
                "type": "rest",
                "connection": {"host": f"{http_target.url}/status/refused?status=400"},
                "history_check": True,
            },
        ),
        *(
            upsert(f"filler-{n:02d}", type="cron", schedule="0 9 * * 1-5", task=rest)
            for n in range(60)
        ),
    )

    # The browser is driven from a thread: its calls block, and the HTTP
    # target the worker delivers to is served by this test's event loop.
    await asyncio.to_thread(operate, browser, worker)


def operate(browser: WebDriver, worker: Worker) -> None:
    """What an operator does, page by page, with what each page must show."""
    # Signing in: "/" leads to the list, which asks for the token first.
    browser.get(worker.url + "/")
    assert "/ui/login" in browser.current_url
    shot(browser, "login")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "sign-in").click()
    went(browser, "/ui/schedules")

    # The list, a page at a time: 62 schedules, 50 on the first page.
    until(lambda: len(rows(browser, "schedules")) == 50, browser)
    shot(browser, "schedules")
    fits_a_phone(browser, "schedules")
    first_page = {r.find_element(By.CSS_SELECTOR, "td.id").text for r in rows(browser, "schedules")}
    browser.find_element(By.ID, "next-page").click()
    went(browser, "after=")
    rest_page = {r.find_element(By.CSS_SELECTOR, "td.id").text for r in rows(browser, "schedules")}
    assert len(rest_page) == 12 and not first_page & rest_page

    # A filter on the client key, then the schedule itself.
    browser.get(worker.url + "/ui/schedules")
    browser.find_element(By.NAME, "key").send_keys("watched")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    went(browser, "key=watched")
    found = rows(browser, "schedules")
    assert len(found) == 1 and "job watched" in found[0].text
    found[0].find_element(By.CSS_SELECTOR, "td.id a").click()
    went(browser, "/ui/schedules/sch_")
    assert browser.find_element(By.ID, "status").text == "active"
    preview = rows(browser, "preview")
    assert len(preview) == 20 and "+09:00" in preview[0].text
    until(lambda: any("succeeded" in r.text for r in rows(browser, "history")), browser)
    history = [r.text for r in rows(browser, "history") if "succeeded" in r.text]
    assert " s" in history[0], history[0]  # how late it came
    shot(browser, "schedule")
    fits_a_phone(browser, "schedule")

    # Its Pause button sends the command; the page then shows it paused.
    browser.find_element(By.ID, "pause").click()
    went(browser, "done=pause")
    assert "pause sent" in browser.page_source
    until(lambda: browser.find_element(By.ID, "status").text == "paused", browser)
    assert "Nothing: the schedule is paused" in browser.find_element(By.ID, "preview").text
    shot(browser, "schedule-paused")

    # The refused delivery, with its reason and its attempt.
    browser.get(worker.url + "/ui/dead-letters")
    letter = until(
        lambda: [r for r in rows(browser, "dead-letters") if CLIENTS.sid("refused") in r.text],
        browser,
    )[0]
    assert "HTTP 400" in letter.text and "#1" in letter.text
    shot(browser, "dead-letters")
    fits_a_phone(browser, "dead-letters")

    # The cluster: this worker owns every partition.
    browser.get(worker.url + "/ui/cluster")
    until(lambda: "ready" in rows(browser, "workers")[0].text, browser)
    owned = rows(browser, "workers")[0].find_elements(By.TAG_NAME, "td")[2].text
    assert owned == ", ".join(str(p) for p in range(worker.partitions))
    shot(browser, "cluster")
    fits_a_phone(browser, "cluster")

    # Without the cookie the pages ask for the token again; a form from
    # another site is refused even with it.
    browser.delete_all_cookies()
    browser.get(worker.url + "/ui/cluster")
    assert "/ui/login" in browser.current_url
    forged = httpx.post(
        f"{worker.url}/ui/schedules/{CLIENTS.sid('watched')}/delete",
        cookies={"scheduler_token": TOKEN},
        headers={"Origin": "http://elsewhere.example"},
    )
    assert forged.status_code == 403
    assert httpx.get(f"{worker.url}/schedules/{CLIENTS.sid('watched')}").status_code == 401
