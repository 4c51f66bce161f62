"""Under load: 8 clients steering and removing at once on each bundled release, against the app run
as a Space runs it (``python app.py`` in its own process, with its own home and temp folders).

Every response is complete and its own (byte for byte what the same request gives alone), the
server's resident memory stays bounded (its peak is printed: ``pytest -s`` shows it), and answering
writes nothing anywhere but Gradio's cache (the repository, the home folder and the temp folder are
checked). One exception, not ours: on its first event Gradio switches matplotlib to its "agg" backend,
which imports pyplot, which writes matplotlib's font cache (~/.cache/matplotlib) once.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from tests.helpers import ROOT  # noqa: E402

pytestmark = pytest.mark.slow
CLIENTS = 8
PEAK_RSS_LIMIT = 2 * 2**30  # bytes; measured peaks: 1.1 GiB on the pixel default, 0.7 GiB on the text default
STEPS = 10

# per release: each client's steer and remove requests (its seed varies the condition's images)
REQUESTS = {
    "bundled": lambda seed: [
        ((3, seed, STEPS, 4.0, "up_blocks.1", 100, "none", [1, 2, 3], "class-map", 1, 2.0, 999, 0), "/steer"),
        ((1, seed, STEPS, 4.0, "Trouser"), "/remove"),
    ],
    "bundled-text": lambda seed: [
        (("a red dress", seed, STEPS, 4.0, "up_blocks.0", 300, "none", [1, 2, 3], "value", "colour:blue", 2.0, 999, 0),
         "/steer"),
        (("a red dress", seed, STEPS, 4.0, "dress"), "/remove"),
    ],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _files(folder: Path) -> set[Path]:
    """Every file under ``folder`` but matplotlib's font cache (see the module docstring)."""
    return {p for p in folder.rglob("*") if p.is_file() and "matplotlib" not in p.parts}


def _rss(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout


def _outputs(client: Client, http: httpx.Client, args: tuple, api: str) -> list[str]:
    """One request's outputs as digests: each image file downloaded whole, every other value as is."""
    found = []
    for value in client.predict(*args, api_name=api):
        if isinstance(value, dict) and value.get("url"):
            response = http.get(value["url"])
            assert response.status_code == 200 and len(response.content) == int(response.headers["content-length"]) > 0
            found.append(hashlib.sha256(response.content).hexdigest())
        else:
            found.append(repr(value))
    return found


@pytest.fixture(params=list(REQUESTS))
def served(request, tmp_path):
    """(release, URL, server pid, its home, its temp folder, Gradio's cache) for the app in its own process."""
    home, temp, cache = tmp_path / "home", tmp_path / "tmp", tmp_path / "tmp" / "gradio"
    for folder in (home, temp, cache):
        folder.mkdir(parents=True)
    port = _free_port()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(temp), "GRADIO_TEMP_DIR": str(cache), "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "app.py", "--release", request.param, "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the app did not start in 5 minutes"
            time.sleep(1)
        yield request.param, url, server.pid, home, temp, cache
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_eight_clients_steering_and_removing_get_complete_own_answers_in_bounded_memory(served):
    release, url, pid, home, temp, cache = served
    # what starting wrote (the Explore examples, as files for gr.Examples) stays as it is
    repository, elsewhere = _git_status(), _files(home) | (_files(temp) - _files(cache))
    started_rss = _rss(pid, "VmRSS")

    def session(index: int) -> list[list[str]]:
        own = Client(url, verbose=False, download_files=False)
        with httpx.Client(timeout=600) as http:
            return [_outputs(own, http, args, api) for args, api in REQUESTS[release](index)]

    samples: list[int] = []
    done = threading.Event()
    sampler = threading.Thread(target=lambda: [samples.append(_rss(pid, "VmRSS")) for _ in iter(lambda: done.wait(0.2), True)])
    sampler.start()
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            together = list(pool.map(session, range(CLIENTS)))
    finally:
        done.set()
        sampler.join()
    took = time.perf_counter() - started
    peak = _rss(pid, "VmHWM")
    print(f"\n{release}: {CLIENTS} clients x (steer + remove) in {took:.1f} s; server RSS {started_rss / 2**20:.0f} MiB "
          f"after start, {max(samples, default=0) / 2**20:.0f} MiB highest sampled, peak (VmHWM) {peak / 2**20:.0f} MiB")
    assert peak < PEAK_RSS_LIMIT

    # its own: each client's answers are what the same requests give when sent alone, and differ between clients
    for index in (0, CLIENTS - 1):
        assert session(index) == together[index], index
    assert together[0][0] != together[1][0]

    # nothing written but Gradio's cache: the repository, the server's home and temp folders untouched
    assert _git_status() == repository
    assert _files(home) | (_files(temp) - _files(cache)) == elsewhere
    assert _files(cache)
