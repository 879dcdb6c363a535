"""`weighter serve` under load: concurrent clients querying a large store over loopback.

Builds a store of --slots active slots from random vectors (as benchmarks/index_speed.py does:
8 active slots per file around 2000 centres, a score cohort of 1000 vectors; no audio), or
takes --store. Starts `weighter serve` on it in a subprocess, then --clients threads, each
with its own keep-alive HTTP connection, ask `GET /api/query?file_id=F&k=10` for random stored
files for --seconds (after a warm-up that loads the FAISS index). Prints the latency of each
query as the client sees it (p50, p99), requests per second and errors.

    python benchmarks/serve_load.py                                # 100k slots, 16 clients, 60 s
    python benchmarks/serve_load.py --slots 5000 --seconds 5       # a quick check
    python benchmarks/serve_load.py --store demo/store --screenshots docs/img --seconds 0

--pages also times what each page asks the API for, once each, on a store with a clustering run
(--cluster runs `weighter cluster` on it first: `python benchmarks/serve_load.py --slots 1000000
--cluster --seconds 0 --pages`). --screenshots DIR also saves each page of the served store (search with a played span,
groups, one group, one file) as PNGs from headless Chromium (weighter.serve.browser); give it
a store of real audio with a clustering run (the demo's).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from index_speed import make_vectors, sets_from  # noqa: E402

from weighter.index import Store  # noqa: E402
from weighter.scoring import COHORT_SIZE, Cohort  # noqa: E402
from weighter.serve.browser import free_port  # noqa: E402


def build_store(directory: Path, slots: int) -> float:
    """A store of ``slots`` random active slots (8 per file); returns the seconds it took."""
    started = time.perf_counter()
    vectors, _ = make_vectors(slots, np.random.default_rng(0))
    with Store(directory, create=True) as store, store.writing():
        store.apply(list(sets_from(vectors)), score_cohort=Cohort(make_vectors(COHORT_SIZE, np.random.default_rng(2))[0]))
    return time.perf_counter() - started


TOKEN = "serve-load-token-0123456789"  # the server's token ($WEIGHTER_TOKEN)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start_server(store_dir: Path, port: int) -> subprocess.Popen:
    """`weighter serve` in a subprocess, answering once it does."""
    import httpx

    server = subprocess.Popen([sys.executable, "-m", "weighter.cli", "-q", "serve", "--store", str(store_dir),
                               "--port", str(port)],
                              env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path), "WEIGHTER_TOKEN": TOKEN})
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/info", headers=AUTH, timeout=2)
            return server
        except httpx.TransportError:
            if server.poll() is not None:
                raise SystemExit(f"weighter serve exited with code {server.returncode}")
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("weighter serve did not answer within 60 s")


def load(base: str, file_ids: np.ndarray, clients: int, seconds: float, k: int) -> dict:
    """``clients`` threads querying random files for ``seconds``: latencies (ms), errors."""
    import httpx

    stop = time.perf_counter() + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients

    def client(n: int) -> None:
        rng = np.random.default_rng(100 + n)
        with httpx.Client(base_url=base, timeout=60, headers=AUTH) as http:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                try:
                    response = http.get("/api/query", params={"file_id": int(rng.choice(file_ids)), "k": k})
                    ok = response.status_code == 200 and "results" in response.json()
                except httpx.HTTPError:
                    ok = False
                latencies[n].append((time.perf_counter() - started) * 1000)
                errors[n] += not ok

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ms = np.concatenate([np.array(x) for x in latencies]) if any(latencies) else np.zeros(0)
    return {"clients": clients, "seconds": round(elapsed, 1), "queries": int(len(ms)),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
            "mean_ms": round(float(ms.mean()), 1) if len(ms) else None,
            "requests_per_second": round(len(ms) / elapsed, 1), "errors": int(sum(errors))}


def screenshots(base: str, store_dir: Path, out: Path) -> list[str]:
    """Each page of the served store as a PNG in ``out``: search (a span playing), groups, a
    group, a file. Returns the files written."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from weighter.serve.browser import chromium

    out.mkdir(parents=True, exist_ok=True)
    with Store(store_dir, read_only=True) as store:
        run = store.run_id()
        # the pages show the file with the most active slots (the first by path among them)
        first = store.db.execute("SELECT f.id FROM files f JOIN slots s ON s.file_id = f.id AND s.active = 1 "
                                 "GROUP BY f.id ORDER BY COUNT(*) DESC, f.path LIMIT 1").fetchone()[0]
    written = []
    with chromium(1100, 820) as browser:
        wait = WebDriverWait(browser, 60)

        def shot(name: str) -> None:
            time.sleep(0.5)  # the map and canvases drawn
            browser.save_screenshot(str(out / name))
            written.append(str(out / name))

        browser.get(f"{base}/?token={TOKEN}")  # the cookie, as a user's first visit sets it
        browser.get(f"{base}/#/search/{first}")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#result-table tr.result"))
        browser.find_elements(By.CSS_SELECTOR, "#result-table tr.result .timeline .span")[1].click()
        wait.until(lambda b: b.execute_script("return document.getElementById('player').dataset.playedFrom"))
        shot("serve-search.png")
        if run is not None:
            browser.get(f"{base}/#/groups")
            wait.until(lambda b: b.execute_script("const i = document.querySelector('img.map'); "
                                                  "return i && i.complete && i.naturalWidth > 0"))
            shot("serve-groups.png")
            browser.get(browser.find_element(By.CSS_SELECTOR, "#group-table tr.group a").get_attribute("href"))
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#member-table tr.member"))
            shot("serve-group.png")
        browser.get(f"{base}/#/file/{first}")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#nearest tr.result"))
        shot("serve-file.png")
        browser.get(f"{base}/#/speakers")
        named = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#speaker-table tr.speaker a")
                           or b.find_elements(By.XPATH, "//p[contains(., 'No named speakers')]"))
        if named and named[0].tag_name == "a":  # a store with named speakers (weighter speaker name / enrol)
            browser.get(named[0].get_attribute("href"))
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#speaker-files tr.result"))
            shot("serve-speaker.png")
    return written


def pages(base: str) -> dict:
    """Seconds and bytes of what each page asks the API for, once each (the groups listing twice:
    made, then kept), over the server's own HTTP."""
    import httpx

    out = {}
    with httpx.Client(base_url=base, timeout=600, headers=AUTH) as http:
        def timed(name: str, url: str):
            started = time.perf_counter()
            response = http.get(url)
            response.raise_for_status()
            out[name] = {"seconds": round(time.perf_counter() - started, 2), "kb": round(len(response.content) / 1024)}
            return response

        timed("info", "/api/info")
        listing = timed("groups_first", "/api/groups?members=false").json()
        timed("groups_again", "/api/groups?members=false")
        if listing["groups"]:
            timed("largest_group", f"/api/groups/{listing['groups'][0]['id']}")
        timed("map", "/api/groups/map.png")
        files = timed("files", "/api/files?limit=50").json()
        if files["files"]:
            timed("file", f"/api/files/{files['files'][0]['id']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=None, help="Serve this store instead of building one.")
    parser.add_argument("--slots", type=int, default=100_000, help="Active slots of the built store.")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0, help="Length of the load (0: none).")
    parser.add_argument("-k", type=int, default=10, help="Files per query.")
    parser.add_argument("--screenshots", type=Path, default=None, help="Save each page as a PNG in this folder.")
    parser.add_argument("--pages", action="store_true",
                        help="Also time what each page asks for, once each (a store with a clustering run).")
    parser.add_argument("--cluster", action="store_true", help="Run `weighter cluster` on the store first (timed).")
    parser.add_argument("--json", action="store_true", help="One JSON object on stdout.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        result = {}
        store_dir = args.store
        if store_dir is None:
            store_dir = Path(tmp) / "store"
            result["build_seconds"] = round(build_store(store_dir, args.slots), 1)
        if args.cluster:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "weighter.cli", "-q", "cluster", "--store", str(store_dir)],
                           check=True, stdout=subprocess.DEVNULL, env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)})
            result["cluster_seconds"] = round(time.perf_counter() - started, 1)
        with Store(store_dir, read_only=True) as store:
            info = store.info().to_dict()
            file_ids = np.array([r[0] for r in store.db.execute("SELECT id FROM files")])
        result |= {"store": str(args.store or "built"), "files": info["files"], "active_slots": info["active_slots"],
                   "index_type": info["index_type"], "cpus": os.cpu_count()}
        port = free_port()
        server = start_server(store_dir, port)
        base = f"http://127.0.0.1:{port}"
        try:
            warm = load(base, file_ids, 1, 2.0, args.k)  # one client alone; FAISS and the scores file load first
            result["single_client_p50_ms"] = warm["p50_ms"]
            if args.seconds > 0:
                result |= load(base, file_ids, args.clients, args.seconds, args.k)
            if args.pages:
                result["pages"] = pages(base)
            if args.screenshots:
                result["screenshots"] = screenshots(base, store_dir, args.screenshots)
        finally:
            server.terminate()
            server.wait(30)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
