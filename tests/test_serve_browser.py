"""weighter serve in a real browser: Debian's headless Chromium driven by Selenium, against the
app served by uvicorn on loopback. Skipped, with the reason, only where Chromium is missing."""

import pytest

pytest.importorskip("fastapi", reason="weighter serve needs the serve extra: pip install 'weighter[serve]'")
from weighter.serve import browser as chromium_tools  # noqa: E402
from weighter.serve import create_app  # noqa: E402

pytestmark = pytest.mark.skipif(chromium_tools.missing() is not None,
                                reason=f"no headless browser: {chromium_tools.missing()}")

WAIT = 30  # seconds: a first query loads FAISS; a first upload loads the model
TOKEN = "browser-token-0123456789abcdef"


@pytest.fixture(scope="module")
def site(corpus_store):
    store_dir, audio, model, extra = corpus_store
    app = create_app(store_dir, root=audio, model=model, token=TOKEN)
    with chromium_tools.serving(app) as url, chromium_tools.chromium() as browser:
        browser.get(f"{url}/?token={TOKEN}")  # as a user opens the printed address: the cookie is set
        yield url, browser, extra
    app.state.weighter.store.close()


def _wait(browser, condition):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT).until(condition)


def _shown(css):
    from selenium.webdriver.common.by import By

    def found(browser):
        nodes = [n for n in browser.find_elements(By.CSS_SELECTOR, css) if n.is_displayed()]
        return nodes or False

    return found


def _no_error(browser):
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.ID, "error")
    assert not box.is_displayed(), box.text


def test_search_a_file_see_ranked_results_and_play_a_span(site, tmp_path):
    from selenium.webdriver.common.by import By

    url, browser, _ = site
    browser.get(f"{url}/#/search")
    files = _wait(browser, _shown("button.file"))
    assert len(files) == 6
    name = files[0].text.split(" ")[0]
    search = browser.find_element(By.ID, "file-search")
    search.send_keys(name)
    _wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "button.file")) == 1)
    browser.find_element(By.CSS_SELECTOR, "button.file").click()
    rows = _wait(browser, _shown("#result-table tr.result"))
    assert len(rows) == 5  # the other stored files, ranked
    scores = [float(r.find_elements(By.TAG_NAME, "td")[2].text) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert name in browser.find_element(By.ID, "query-head").text
    groups = [r.find_element(By.CSS_SELECTOR, "td.group").text for r in rows]  # the store was clustered once
    assert all(g == "outlier" or g.startswith("group ") for g in groups), groups
    # a span of the first result's own timeline: the audio element plays from its start
    span = rows[0].find_elements(By.CSS_SELECTOR, ".timeline")[1].find_elements(By.CSS_SELECTOR, ".span")[0]
    start = float(span.get_attribute("data-start"))
    span.click()
    _wait(browser, lambda b: b.execute_script("return document.getElementById('player').dataset.playedFrom"))
    played_from, now, paused, src = browser.execute_script(
        "const p = document.getElementById('player'); return [Number(p.dataset.playedFrom), p.currentTime, p.paused, "
        "p.currentSrc];")
    assert abs(played_from - start) < 0.1 and now >= start
    assert "/api/audio/" in src
    end = float(span.get_attribute("data-end"))
    if end - start > 1.0:  # still playing, well before the span's end
        assert not paused
    _no_error(browser)
    browser.save_screenshot(str(tmp_path / "search.png"))


def test_groups_page_and_a_group(site, tmp_path):
    from selenium.webdriver.common.by import By

    url, browser, _ = site
    browser.get(f"{url}/#/groups")
    groups = _wait(browser, _shown("#group-table tr.group"))
    assert "Run 1" in browser.find_element(By.ID, "run-head").text
    _wait(browser, lambda b: b.execute_script("const i = document.querySelector('img.map'); "
                                              "return i.complete && i.naturalWidth > 0"))
    size = int(groups[0].find_elements(By.TAG_NAME, "td")[2].text)  # group, name, slots
    groups[0].find_element(By.TAG_NAME, "a").click()
    members = _wait(browser, _shown("#member-table tr.member"))
    assert len(members) == size
    _no_error(browser)
    browser.save_screenshot(str(tmp_path / "group.png"))
    members[0].find_element(By.TAG_NAME, "a").click()  # a member's file page
    slots = _wait(browser, _shown("#slot-table tr.slot"))
    assert slots and browser.find_elements(By.CSS_SELECTOR, "canvas.weights")
    _wait(browser, _shown("#nearest tr.result"))
    _no_error(browser)


def test_uploading_a_file_that_is_not_audio_shows_the_error(site, tmp_path):
    from selenium.webdriver.common.by import By

    url, browser, extra = site
    notes = tmp_path / "notes.txt"
    notes.write_text("a shopping list, not a recording\n" * 20)
    browser.get(f"{url}/#/search")
    browser.find_element(By.ID, "upload").send_keys(str(notes))
    browser.find_element(By.ID, "upload-go").click()
    error = _wait(browser, _shown("#error"))[0]
    assert error.text.startswith("notes.txt: ") and "nothing was stored" in error.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#result-table tr.result")
    # a real recording uploaded: ranked results, the error gone
    browser.find_element(By.ID, "upload").send_keys(str(extra[0]))
    browser.find_element(By.ID, "upload-go").click()
    _wait(browser, _shown("#result-table tr.result"))
    _no_error(browser)


def test_name_a_group_see_the_name_on_the_search_page_and_find_it_by_name(corpus_store, tmp_path):
    import shutil

    from selenium.webdriver.common.by import By

    store_dir, audio, model, _ = corpus_store
    copy = tmp_path / "store"  # this test writes: a copy of the shared store
    shutil.copytree(store_dir, copy)
    app = create_app(copy, root=audio, model=model, token=TOKEN)
    with chromium_tools.serving(app) as url, chromium_tools.chromium() as browser:
        browser.get(f"{url}/#/groups")  # without the token: the one-line refusal, no page
        assert "needs its token" in browser.find_element(By.TAG_NAME, "body").text
        assert not browser.find_elements(By.ID, "view")
        browser.get(f"{url}/?token={TOKEN}")
        browser.get(f"{url}/#/groups")
        groups = _wait(browser, _shown("#group-table tr.group"))
        group = groups[0].find_element(By.TAG_NAME, "a")
        label = group.text  # "group G"
        group.click()
        field = _wait(browser, _shown("#group-name"))[0]
        members = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#member-table tr.member td:first-child a")]
        field.send_keys("branch manager")
        browser.find_element(By.ID, "group-name-go").click()
        _wait(browser, lambda b: "branch manager" in b.execute_script(  # the page is redrawn: read it in one step
            "const h = document.getElementById('group-head'); return h ? h.textContent : '';"))
        _no_error(browser)
        # the search page of one of its files names the group in the results that fall in it
        browser.get(f"{url}/#/search")
        search = _wait(browser, _shown("#file-search"))[0]
        search.send_keys(members[0])
        _wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "button.file")) == 1)
        browser.find_element(By.CSS_SELECTOR, "button.file").click()
        rows = _wait(browser, _shown("#result-table tr.result"))
        cells = {r.find_element(By.CSS_SELECTOR, "td:nth-child(2)").text: r.find_element(By.CSS_SELECTOR, "td.group").text
                 for r in rows}
        others = [m for m in members[1:] if m in cells]
        assert others and all(cells[m] == f"{label} (branch manager)" for m in others), cells
        # query by the name: every member file listed, with its spans playable
        who = browser.find_element(By.ID, "speaker-search")
        who.send_keys("branch manager")
        browser.find_element(By.ID, "speaker-go").click()
        found = _wait(browser, _shown("#speaker-files tr.result"))
        listed = [r.find_element(By.CSS_SELECTOR, "td:nth-child(2)").text for r in found]
        assert set(listed[:len(members)]) == set(members)
        assert "carried by " + label in browser.find_element(By.TAG_NAME, "main").text
        found[0].find_element(By.CSS_SELECTOR, ".span").click()
        _wait(browser, lambda b: b.execute_script("return document.getElementById('player').dataset.playedFrom"))
        _no_error(browser)
        browser.save_screenshot(str(tmp_path / "speaker.png"))
        blocked = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
        assert not blocked, blocked  # the pages run under the app's policy: no inline script or style attribute
    app.state.weighter.store.close()
