"""Big zip uploads stream to a file (pages/upload_routes.py) and are decoded from disk.

The route's refusals (limit, ticket, other site, not a zip) with Starlette's TestClient;
Explore loading a ticket's zip under AppTest; a slow real-server test that uploads a
~150 MB zip through the route and loads it on Explore, measuring the web process's peak
anonymous memory (sampled) while it does.
"""

from __future__ import annotations

import io
import os
import secrets
import threading
import time
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from shapes import shapes_zip
from starlette.applications import Starlette

with warnings.catch_warnings():  # Starlette's notice that it prefers httpx2 to httpx
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from conftest import APPTEST_TIMEOUT, ROOT

from cnnlab.data import datasets
from cnnlab.data.datasets import BadUpload
from pages import upload_routes
from pages.upload_routes import NAME_HEADER, TICKET_HEADER, UPLOAD_PATH

LIMIT_MB = 1


@pytest.fixture
def uploads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty upload folder (CNNLAB_UPLOADS_DIR) and a 1 MB upload limit."""
    from streamlit import config

    folder = tmp_path / "uploads"
    monkeypatch.setenv("CNNLAB_UPLOADS_DIR", str(folder))
    before = config.get_option("server.maxUploadSize")
    config.set_option("server.maxUploadSize", LIMIT_MB)
    yield folder
    config.set_option("server.maxUploadSize", before)


@pytest.fixture
def client(uploads: Path) -> Iterator[TestClient]:
    with TestClient(Starlette(routes=upload_routes.ROUTES), base_url="http://lab.test") as c:
        yield c


def post(client: TestClient, ticket: str, body, name: str = "shapes.zip", **headers):
    return client.post(UPLOAD_PATH, content=body, headers={
        TICKET_HEADER: ticket, NAME_HEADER: name, "Origin": "http://lab.test", **headers})


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_a_zip_streams_to_the_tickets_file(client: TestClient, uploads: Path) -> None:
    ticket = upload_routes.new_ticket()
    data = shapes_zip(per_class=4)
    chunks = [data[i:i + 1000] for i in range(0, len(data), 1000)]  # chunked, no length
    response = post(client, ticket, iter(chunks), name="my%20shapes.zip")
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "my shapes.zip", "bytes": len(data)}
    ready = upload_routes.pending(ticket)
    assert ready is not None and ready.name == "my shapes.zip" and ready.size == len(data)
    assert ready.path.read_bytes() == data
    assert files(uploads) == {f"{ticket}.ticket", f"{ticket}.zip", f"{ticket}.json"}

    loaded = upload_routes.take(ticket)
    assert loaded.read_bytes() == data and upload_routes.pending(ticket) is None
    # The next upload replaces the pending one, and loading it replaces the loaded one.
    post(client, ticket, shapes_zip(per_class=3), name="second.zip").raise_for_status()
    assert upload_routes.pending(ticket).name == "second.zip"
    assert upload_routes.take(ticket) == loaded and loaded.read_bytes() != data
    assert files(uploads) == {f"{ticket}.ticket", f"{ticket}.loaded.zip"}


def asgi_post(headers: dict[str, str], chunks: Iterator[bytes]) -> tuple[int, str, int]:
    """POST ``chunks`` to the route as a server would hand them over, one ASGI message
    each (TestClient reads a whole body first); (status, text, chunks the route took)."""
    import asyncio

    app = Starlette(routes=upload_routes.ROUTES)
    taken = 0

    async def receive() -> dict:
        nonlocal taken
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        taken += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": UPLOAD_PATH, "raw_path": b"",
             "root_path": "", "query_string": b"", "server": ("lab.test", 80),
             "client": ("127.0.0.1", 5000),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body.decode(), taken


def test_a_body_over_the_limit_is_refused_mid_stream_and_removed(client: TestClient,
                                                                  uploads: Path) -> None:
    ticket = upload_routes.new_ticket()
    chunk_count = 3 * LIMIT_MB * 16  # 3 MB in 64 KB chunks, no Content-Length
    status, text, taken = asgi_post(
        {"host": "lab.test", "origin": "http://lab.test", TICKET_HEADER: ticket},
        (bytes(64 * 1024) for _ in range(chunk_count)))
    assert status == 413
    assert text == (f"The upload is larger than the {LIMIT_MB} MB allowed: upload a "
                    "smaller zip (fewer or smaller images).")
    assert taken == LIMIT_MB * 16 + 1  # refused at the first chunk past the limit
    assert files(uploads) == {f"{ticket}.ticket"}  # the partial file is gone
    # A declared length over the limit is refused before any byte is read.
    response = post(client, ticket, b"x" * (LIMIT_MB * 1024 * 1024 + 1))
    assert response.status_code == 413 and files(uploads) == {f"{ticket}.ticket"}
    # Exactly the limit passes the size check (and then is not a zip).
    response = post(client, ticket, b"x" * (LIMIT_MB * 1024 * 1024))
    assert response.status_code == 400, response.text
    assert response.text.startswith(f"The upload ({LIMIT_MB * 1024 * 1024:,} bytes) is not a "
                                    "zip file")
    assert files(uploads) == {f"{ticket}.ticket"}


def test_unknown_tickets_and_other_sites_are_refused(client: TestClient, uploads: Path) -> None:
    ticket = upload_routes.new_ticket()
    data = shapes_zip(per_class=2)
    for wrong in (secrets.token_urlsafe(32), "../" * 12 + "etc/passwd", ""):
        response = post(client, wrong, data)
        assert response.status_code == 403 and "ticket is not known" in response.text
    response = post(client, ticket, data, Origin="http://elsewhere.test")
    assert response.status_code == 403 and "another site" in response.text
    assert files(uploads) == {f"{ticket}.ticket"}
    assert client.get(UPLOAD_PATH).status_code == 405  # nothing is read back here


def test_old_files_are_swept_and_a_swept_ticket_is_remade(uploads: Path) -> None:
    session: dict = {}
    ticket = upload_routes.session_ticket(session)
    assert session[upload_routes.TICKET_KEY] == ticket and upload_routes.known(ticket)
    assert upload_routes.session_ticket(session) == ticket
    part = uploads / f"{ticket}.abc.part"
    part.write_bytes(shapes_zip(per_class=2))
    upload_routes.complete(ticket, part, "a.zip")
    upload_routes.take(ticket)
    stale = time.time() - (upload_routes.MAX_AGE_HOURS + 1) * 3600
    for path in uploads.iterdir():
        os.utime(path, (stale, stale))
    upload_routes.session_ticket(session)  # a page run keeps its ticket and zip fresh
    assert upload_routes.sweep() == 0
    for path in uploads.iterdir():
        os.utime(path, (stale, stale))
    assert upload_routes.sweep() == 2 and not upload_routes.known(ticket)
    assert upload_routes.session_ticket(session) != ticket  # a new one for the session


def test_load_zip_reads_a_path_as_it_reads_bytes(tmp_path: Path) -> None:
    data = shapes_zip(per_class=6)
    path = tmp_path / "shapes.zip"
    path.write_bytes(data)
    from_bytes = datasets.load_zip(data, (16, 16), False, name="folder:s.zip")
    for source in (path, str(path)):
        from_disk = datasets.load_zip(source, (16, 16), False, name="folder:s.zip")
        assert np.array_equal(from_disk.x_train, from_bytes.x_train)
        assert np.array_equal(from_disk.y_test, from_bytes.y_test)
    path.write_bytes(b"not a zip" * 100)
    with pytest.raises(BadUpload, match=r"The upload \(900 bytes\) is not a zip file"):
        datasets.load_zip(path, (16, 16), False)
    with pytest.raises(BadUpload, match="cannot be read any more"):
        datasets.load_zip(tmp_path / "gone.zip", (16, 16), False)


# --------------------------------------------------------------------------- the page


def hand_zip(at, name: str, data: bytes) -> None:
    """Put ``data`` where the upload route puts a zip sent from the page under test (an
    AppTest that has run Explore once): its session's ticket's pending upload."""
    ticket = at.session_state[upload_routes.TICKET_KEY]
    part = upload_routes.uploads_dir() / f"{ticket}.test.part"
    part.write_bytes(data)
    upload_routes.complete(ticket, part, name)


def test_explore_loads_the_zip_uploaded_with_its_ticket(uploads: Path, runs_root: Path,
                                                        monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("KERAS_HOME", str(runs_root / "no-keras"))  # the bundled sample: fast
    at = AppTest.from_file(str(ROOT / "pages" / "explore.py"),
                           default_timeout=APPTEST_TIMEOUT).run()
    assert not at.exception, at.exception
    load = next(b for b in at.button if b.label == "Load images")
    assert load.disabled  # nothing uploaded yet
    assert any(f"A zip up to {LIMIT_MB} MB" in c.value for c in at.caption)
    ticket = at.session_state[upload_routes.TICKET_KEY]
    assert upload_routes.known(ticket)

    hand_zip(at, "my shapes.zip", shapes_zip(per_class=5))
    at.run()
    assert any("Ready to load: my shapes.zip" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Load images").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["dataset_name"] == "folder:my shapes.zip"
    assert next(m for m in at.metric if m.label == "Classes").value == "2"
    source = at.session_state["upload_source"]
    assert source == uploads / f"{ticket}.loaded.zip" and source.is_file()
    assert upload_routes.pending(ticket) is None
    assert next(b for b in at.button if b.label == "Load images").disabled


def noise_zip(path: Path, megabytes: int) -> int:
    """A ZIP_STORED zip of random-noise PNGs (incompressible) of about ``megabytes`` MB in
    two class folders; returns its size in bytes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    side = 512  # a 512×512 noise PNG is ~790 KB
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        i = 0
        while path.stat().st_size < megabytes * 1024 * 1024:
            png = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
                png, format="PNG", compress_level=0)
            zf.writestr(f"noise/{('a', 'b')[i % 2]}/{i:04d}.png", png.getvalue())
            zf.fp.flush()
            i += 1
    return path.stat().st_size


# --------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The served app's upload folder, a fresh one (the streamlit_server fixture reads it)."""
    return {"CNNLAB_UPLOADS_DIR": str(tmp_path_factory.mktemp("server-uploads"))}


def server_pid(url: str) -> int:
    """The process id of the `streamlit run` serving ``url`` (found by its --server.port)."""
    port = url.rsplit(":", 1)[1].encode()
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in args and port in args and b"--server.port" in args:
            return int(proc.name)
    raise AssertionError(f"no streamlit process serves {url}")


def anon_kb(pid: int) -> int:
    """Process ``pid``'s anonymous resident memory (RssAnon), in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError(f"no RssAnon in /proc/{pid}/status")


def quiet_anon_kb(pid: int, timeout: float = 60.0) -> int:
    """Process ``pid``'s RssAnon once it has stayed within 2 MB for 1.5 s.

    A page's first visit can leave work running for seconds after it draws: before the
    chunked pixel_counts, Explore's first histogram of MNIST took the server from 171 to
    540 MB and back for about 6 s, and the warm-up zip was loaded inside that wave."""
    deadline = time.monotonic() + timeout
    last, since = anon_kb(pid), time.monotonic()
    while time.monotonic() - since < 1.5:
        if time.monotonic() > deadline:
            raise AssertionError(f"the server's memory did not settle in {timeout:.0f} s")
        time.sleep(0.05)
        now = anon_kb(pid)
        if abs(now - last) > 2048:
            last, since = now, time.monotonic()
    return last


@contextmanager
def anon_peak_kb(pid: int) -> Iterator[list[int]]:
    """Sample process ``pid``'s RssAnon every 5 ms while the block runs; the list it yields
    holds [before, peak] once the block ends.

    Anonymous memory, not VmHWM: an upload held in memory is anonymous, while resident
    file pages (shared libraries) come and go with the kernel's reclaim and moved VmHWM by
    50-125 MB between runs on the same machine.
    """
    found = [quiet_anon_kb(pid)]
    peak = found[0]
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, anon_kb(pid))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        done.set()
        thread.join()
        found.append(max(peak, anon_kb(pid)))


def upload_and_load(page, zip_path: Path) -> None:
    """Send ``zip_path`` with Explore's uploader (its expander open) and load it."""
    page.get_by_label("Zip file, up to").set_input_files(str(zip_path))
    page.get_by_text(f"Ready to load: {zip_path.name}").wait_for(timeout=300_000)
    page.get_by_role("button", name="Load images").click()
    # Loaded: the page has rerun without the pending zip, on the new data set.
    page.get_by_text(f"Ready to load: {zip_path.name}").wait_for(state="detached",
                                                                timeout=300_000)
    page.get_by_role("heading", name="What the model trains on").wait_for(timeout=300_000)


@pytest.mark.browser
def test_a_150_mb_zip_is_uploaded_and_loaded_without_its_size_in_memory(
        streamlit_server: str, server_env: dict[str, str], browser_page,
        tmp_path: Path) -> None:
    from ui_steps import SLOW

    page = browser_page
    small, big = tmp_path / "warm-up.zip", tmp_path / "noise.zip"
    small.write_bytes(shapes_zip(per_class=10))
    size = noise_zip(big, 150)
    pid = server_pid(streamlit_server)
    page.goto(f"{streamlit_server}/explore")
    page.get_by_role("heading", level=1, name="Explore").wait_for(timeout=SLOW)
    page.get_by_text("Use your own images").click()
    # A small zip first: whatever loading any upload imports or caches is in place, so
    # what follows is the big archive's own cost.
    upload_and_load(page, small)
    with anon_peak_kb(pid) as anon:
        upload_and_load(page, big)
    before, peak = anon
    growth = (peak - before) * 1024
    print(f"\n150 MB upload: archive {size:,} bytes; web process anonymous memory "
          f"{before:,} kB, peak {peak:,} kB (+{growth / 1024 / 1024:,.1f} MB)")
    # Streamed, the server holds some chunks and the decoded images (about 10 MB here);
    # an upload read into memory takes the archive's size (150 MB, tried) and fails.
    assert growth < size / 4, (before, peak, size)
    uploads = Path(server_env["CNNLAB_UPLOADS_DIR"])
    (loaded,) = uploads.glob("*.loaded.zip")
    assert loaded.stat().st_size == size  # the session's source; the warm-up's is replaced
    assert not list(uploads.glob("*.part"))
    assert [p.name for p in uploads.glob("*.zip")] == [loaded.name]  # none waiting
