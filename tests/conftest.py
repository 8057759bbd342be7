"""Shared pytest set-up: KERAS_HOME on the shared data, fixtures, browser helpers.

cnnlab is imported as the installed package (``pip install -e .``). pytest puts this
folder on sys.path (its default import mode), so helpers beside it (shapes.py) import by
name; ``pythonpath`` in pyproject.toml adds the repository root for the app's ``pages``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_KERAS = ROOT.parent / "shared" / "keras"

# Tests read the real data sets from ../shared/keras when it is there (CI sets it too).
if "KERAS_HOME" not in os.environ and SHARED_KERAS.is_dir():
    os.environ["KERAS_HOME"] = str(SHARED_KERAS)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One run at a time unless a test asks for more: the queue tests (a second run waits for
# the first) are written for one worker; cpu_slots, the default on a CPU, has its own test.
os.environ.setdefault("CNNLAB_WORKERS", "1")
# Explore makes an upload ticket file on every run: keep the tests' out of the machine's
# upload folder (/tmp/cnnlab-uploads-<user>), in one temporary folder per test process.
os.environ.setdefault("CNNLAB_UPLOADS_DIR", tempfile.mkdtemp(prefix="cnnlab-test-uploads-"))

# Pages that import Keras need more than AppTest's default 3 s.
APPTEST_TIMEOUT = 120


def plain(markdown: str) -> str:
    """What a reader sees of Markdown from cnnlab.text.markdown: escapes and joiners gone."""
    import re

    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")


def with_fit(fields: dict) -> dict:
    """TrainRequest keyword arguments with ``batch_size``, ``epochs`` and ``patience``
    moved into ``fit`` (their one home), so test helpers can take them flat."""
    from cnnlab.model.fit_settings import FIELDS, FitSettings

    rest = {k: v for k, v in fields.items() if k not in FIELDS}
    return {**rest, "fit": FitSettings(**{k: v for k, v in fields.items() if k in FIELDS})}


def wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``check`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def has_real_mnist() -> bool:
    """True when the full MNIST IDX files are reachable through KERAS_HOME."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        return False
    return (Path(home) / "datasets" / "mnist" / "train-images-idx3-ubyte.gz").is_file()


def _ray_home_listing() -> dict[str, tuple[int, int]] | None:
    """Every file under ~/.ray with its (mtime_ns, size); None when there is no ~/.ray."""
    folder = Path.home() / ".ray"
    if not folder.is_dir():
        return None
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="session", autouse=True)
def _never_the_home_ray_folder() -> Iterator[None]:
    """No test writes into ~/.ray, where Ray keeps its token (auth_token): a Ray started with
    no token writes a new one there, and from then on every `ray start --head` on this
    account turns token authentication on."""
    before = _ray_home_listing()
    yield
    after = _ray_home_listing()
    assert after == before, (
        f"The tests changed {Path.home() / '.ray'} (before: {before}, after: {after}). A test "
        "that starts Ray must give it a token as RAY_AUTH_TOKEN (tests/test_ray.py) or run it "
        "with HOME in a temporary folder (tests/test_ray_cluster.py).")


@pytest.fixture(scope="session", autouse=True)
def _component_manifests_scanned_once() -> Iterator[None]:
    """Each new AppTest scans every installed distribution's metadata for Streamlit v2
    component manifests (~0.3 CPU-s here, a few hundred times a suite); what is installed
    does not change during a test session, so the scan runs once."""
    from streamlit.components.v2 import manifest_scanner

    scan = manifest_scanner.scan_component_manifests
    found = scan()
    manifest_scanner.scan_component_manifests = lambda max_workers=None: list(found)
    yield
    manifest_scanner.scan_component_manifests = scan


@pytest.fixture(autouse=True)
def _never_the_working_runs_folder(tmp_path_factory, monkeypatch) -> None:
    """No test touches ./runs: the default runs root is a fresh temporary folder."""
    monkeypatch.setenv("CNNLAB_RUNS_DIR", str(tmp_path_factory.mktemp("default-runs")))


@pytest.fixture(autouse=True)
def _close_engines():
    """Close the engines pages made during a test: their workers and runs-root locks."""
    yield
    from cnnlab.train import jobs

    jobs._close_all()


@pytest.fixture
def runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty runs root, also exported as CNNLAB_RUNS_DIR for pages under test."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("CNNLAB_RUNS_DIR", str(root))
    return root


class CliHere:
    """``cnnlab ARGS`` run in the test process through ``cnnlab.cli.main.main`` (what the
    console script calls), its output captured at the file descriptors as a terminal sees
    it. For commands whose printed result is the point: a fresh interpreter pays ~6 CPU-s
    importing TensorFlow first. Exit statuses from the process, Ctrl-C, TensorFlow's own log
    lines and training keep real subprocesses (test_cli.py, test_cli_runs.py)."""

    def __init__(self, capfd: pytest.CaptureFixture[str]) -> None:
        self.capfd = capfd

    def __call__(self, *args: object) -> subprocess.CompletedProcess:
        from cnnlab.cli.main import main

        argv = [str(a) for a in args]
        self.capfd.readouterr()
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refuses bad usage by exiting 2
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = self.capfd.readouterr()
        return subprocess.CompletedProcess(["cnnlab", *argv], code, out, err)

    def json(self, *args: object) -> dict:
        """The one JSON object a successful ``ARGS --json`` prints."""
        done = self(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def cli_here(capfd: pytest.CaptureFixture[str]) -> CliHere:
    """Run ``cnnlab ARGS`` in this process (see CliHere)."""
    return CliHere(capfd)


# --------------------------------------------------------------------------- browser tests
# A real `streamlit run app.py` server and a Chromium page driving it (playwright, sync API).

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TEST_OUTPUT = ROOT / "test-output"


# Test files that start a local Ray instance (~800 MB, a dozen processes): one at a time.
RAY_FILES = {"test_ray.py", "test_ray_cluster.py"}

# The files (xdist groups) that take minutes, longest first by their total time in a full
# run on 2 cores (--junitxml): started first, so the many short files fill both workers at
# the end.
LONGEST_FILES = ("test_benches.py", "test_cli_runs.py", "test_e2e.py", "test_engine.py",
                 "test_predict_page.py", "ray", "test_transfer.py", "test_browser_theme.py",
                 "test_browser_challenge.py", "test_bad_inputs.py",
                 "test_browser_shared_sets.py", "test_engine_process.py", "test_training.py",
                 "test_cli_challenge.py", "test_browser_class.py", "test_cli.py",
                 "test_browser_signin.py", "test_class_load.py", "test_proxy.py")


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reads the groups into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every browser test is also slow (a server, Chromium): `-m "not slow"` leaves them out
    even where a module only says ``pytest.mark.browser``.

    With pytest-xdist (`-n 2 --dist loadgroup`, the README's command) each test file runs
    on one worker, so its module fixtures (a server, a trained run, a Ray instance) are made
    once; the Ray files share one worker.

    Files run longest first (LONGEST_FILES, then the rest in name order), and the README's
    command turns off xdist's own order (by count of tests: it put the browser files, a
    few tests and minutes each, last, where one worker ran on while the other was done)."""
    groups = {}
    for item in items:
        if item.get_closest_marker("browser") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
        groups[item] = "ray" if item.path.name in RAY_FILES else item.path.name
        item.add_marker(pytest.mark.xdist_group(groups[item]))
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(groups[item], len(rank)))  # stable: files stay whole


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell a failure."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runs root the streamlit_server serves; a module may override it with a filled one."""
    return tmp_path_factory.mktemp("server-runs")


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    """Extra environment for the served app (a module may override it, e.g. class mode)."""
    return {}


@contextmanager
def served_app(port: int, cwd: Path, env: dict[str, str], log_path: Path) -> Iterator[str]:
    """Run `streamlit run <ROOT>/app.py` on ``port`` from ``cwd``; yield its URL once
    /_stcore/health answers (the log in the failure otherwise); terminate it afterwards."""
    import time
    import urllib.request

    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port",
             str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
             "--browser.gatherUsageStats", "false"],
            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit not healthy after 90 s:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def streamlit_server(server_runs_dir: Path, server_env: dict[str, str],
                     tmp_path_factory: pytest.TempPathFactory):
    """URL of a `streamlit run app.py` server on a free port (CNNLAB_RUNS_DIR=server_runs_dir).

    Started once per module, waited for on /_stcore/health, terminated afterwards.
    """
    with lab_server(server_runs_dir, server_env, tmp_path_factory) as url:
        yield url


@contextmanager
def lab_server(runs_dir: Path, extra_env: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `streamlit run app.py` on a free port serving ``runs_dir`` (a module may start a
    second one on the same root: several web processes of one class)."""
    env = {**os.environ, "CNNLAB_RUNS_DIR": str(runs_dir), **extra_env}
    if SHARED_KERAS.is_dir():
        env.setdefault("KERAS_HOME", str(SHARED_KERAS))
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    with served_app(_free_port(), ROOT, env, log_path) as url:
        yield url


@pytest.fixture(scope="module")
def _chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(_chromium, request: pytest.FixtureRequest):
    """A fresh Chromium page (1280×900); saved to test-output/<test>.png if the test fails."""
    context = _chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        TEST_OUTPUT.mkdir(exist_ok=True)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in request.node.name)
        page.screenshot(path=str(TEST_OUTPUT / f"{name}.png"), full_page=True)
    context.close()
