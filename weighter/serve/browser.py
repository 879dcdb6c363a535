"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium, and a
uvicorn server in a thread: what the browser tests and the screenshots of docs/serve.md use.

Nothing is downloaded: the driver is ``/usr/bin/chromedriver`` given explicitly, so Selenium
Manager stays idle.
"""

import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

# Root on a closed network: no sandbox, no GPU, nothing fetched in the background; audio plays
# without a user gesture (there is no sound device: it plays to nowhere, and the clock runs).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required", "--window-size=1200,900"]


def missing() -> str | None:
    """Why the browser cannot run here (one line), or None when it can.

    Returns
    -------
    str or None

    Examples
    --------
    >>> missing()  # doctest: +SKIP
    '/usr/bin/chromium is missing (apt-get install chromium; scripts/install-system-deps.sh does it)'
    """
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing (apt-get install {package}; scripts/install-system-deps.sh does it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is missing (pip install 'weighter[test]')"
    return None


@contextmanager
def chromium(width: int = 1200, height: int = 900):
    """A headless Chromium under Selenium, with a fresh profile, closed on exit.

    Parameters
    ----------
    width, height : int
        Window size in pixels (screenshots are this size).

    Yields
    ------
    selenium.webdriver.Chrome

    Examples
    --------
    >>> with chromium() as browser:  # doctest: +SKIP
    ...     browser.get("http://127.0.0.1:8000/#/groups")
    ...     browser.save_screenshot("groups.png")
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="weighter-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--window-size={width},{height}")
        options.add_argument(f"--user-data-dir={profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console: CSP violations show there
        browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield browser
        finally:
            browser.quit()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now.

    Returns
    -------
    int

    Examples
    --------
    >>> 1024 <= free_port() <= 65535  # doctest: +SKIP
    True
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app, port: int | None = None):
    """Serve ``app`` with uvicorn on 127.0.0.1 in a thread; yields its base URL; stops on exit.

    Parameters
    ----------
    app : ASGI app
        E.g. ``create_app(store_dir)``.
    port : int or None
        None: a free port.

    Yields
    ------
    str
        ``"http://127.0.0.1:PORT"``.

    Examples
    --------
    >>> with serving(create_app("walk/store")) as url:  # doctest: +SKIP
    ...     httpx.get(f"{url}/api/info").json()["files"]
    40
    """
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
