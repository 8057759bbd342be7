"""Ray as a real cluster runs it: `ray start --head` with token authentication, joined by the lab.

The README's recipe end to end on one machine: a head node started by Ray's own CLI, with
token authentication on, and the lab joining it the way `streamlit run app.py` does
(CNNLAB_EXECUTOR=ray, RAY_ADDRESS) in a process of its own. Everything keeps to loopback
(--node-ip-address 127.0.0.1, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0). HOME points into the
test's folder and the token travels as RAY_AUTH_TOKEN, so no ~/.ray is read or written
(conftest's session guard checks the real one).

The head is ended by its own pid, never with `ray stop`: that ends every Ray process on the
machine, another test run's too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a Ray head node, two lab processes and a worker start-up

pytest.importorskip("ray")

START_S = 120
TRAIN_S = 300

# The lab's side, as the Train page drives it: an Engine whose executor comes from
# CNNLAB_EXECUTOR, one tiny run, and what came of it as JSON on the last line.
LAB = """
import json, sys
from pathlib import Path
from cnnlab.data import datasets
from cnnlab.model import config
from cnnlab.model.fit_settings import FitSettings
from cnnlab.runs import store as runs
from cnnlab.train import jobs, training

engine = jobs.Engine(Path(sys.argv[1]))
out = {"unavailable": engine.unavailable()}
if not out["unavailable"]:
    out["resources"] = sorted(engine.executor.total)
    tiny = config.ModelConfig(blocks=(config.ConvBlock(filters=4),),
                              dense=(config.DenseLayer(16),), learning_rate=3e-3)
    request = training.TrainRequest(dataset="mnist_sample", config=tiny, limit=200,
                                    fit=FitSettings(batch_size=32, epochs=1, patience=1),
                                    name="ray-cluster")
    job = engine.submit(request, datasets.load("mnist_sample"))
    job.wait(float(sys.argv[2]))
    out["status"] = job.result.status if job.result else "not done"
    out["message"] = job.result.message if job.result else ""
    out["epochs"] = runs.load_history(job.run_dir)["epoch"].tolist()
    out["files"] = sorted(p.name for p in job.run_dir.iterdir())
engine.close()
print(json.dumps(out))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base_env(home: Path) -> dict[str, str]:
    """This environment with HOME in the test's folder, Ray on loopback and no Ray
    address or token settings inherited from the shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(HOME=str(home), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_USAGE_STATS_ENABLED="0", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _end(proc: subprocess.Popen) -> None:
    """SIGTERM the `ray start --block` process (it ends the processes it started), then
    SIGKILL whatever is left in the session it leads."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: start_new_session below
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.fixture(scope="module")
def head() -> Iterator[dict[str, str]]:
    """A token-authenticated Ray head node on loopback; yields the address, the token and
    the HOME every process here uses. Ended (and its processes gone) afterwards."""
    # Straight under /tmp, not pytest's tmp_path (…/popen-gw0/… under xdist): Ray's socket
    # paths live under it and a Unix socket path may not exceed 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    home = base / "home"
    home.mkdir()
    token = secrets.token_hex(32)  # what `ray get-auth-token --generate` makes
    port = _free_port()
    env = {**_base_env(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    log_path = base / "head.log"
    # Fixed default ports (client server 10001, dashboard agent 52365) would collide with
    # another Ray on this machine: free ones instead.
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
           "--port", str(port), "--node-ip-address", "127.0.0.1", "--temp-dir", str(base / "t"),
           "--num-cpus", "1", "--num-gpus", "0", "--resources", '{"cnnlab_test_head": 1}',
           "--object-store-memory", str(200 * 2**20), "--include-dashboard", "false",
           "--ray-client-server-port", str(_free_port()),
           "--dashboard-agent-listen-port", str(_free_port()), "--disable-usage-stats"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + START_S
        while "block forever" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`ray start --head` did not come up (exit {proc.poll()}):\n"
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"address": f"127.0.0.1:{port}", "token": token, "home": str(home)}
    finally:
        _end(proc)
    try:
        assert not (home / ".ray").exists(), "a token given as RAY_AUTH_TOKEN left no file"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def lab(head: dict[str, str], tmp_path: Path, **env: str | None) -> dict:
    """Run LAB with CNNLAB_EXECUTOR=ray and RAY_ADDRESS on ``head``, plus ``env`` (None
    removes a variable); its JSON answer."""
    full = {**_base_env(Path(head["home"])), "CNNLAB_EXECUTOR": "ray",
            "RAY_ADDRESS": head["address"]}
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    runs_root = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-c", LAB, str(runs_root), str(TRAIN_S)],
                          env=full, capture_output=True, text=True, timeout=TRAIN_S + 120)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, f"the lab failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1])


def test_the_lab_joins_with_the_token_and_trains_on_the_cluster(head, tmp_path) -> None:
    out = lab(head, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head["token"])
    assert out["unavailable"] == ""
    assert "cnnlab_test_head" in out["resources"]  # the head's own resource: joined, not local
    assert out["status"] == "finished", out["message"]
    assert out["epochs"] == [1]
    assert {"best.keras", "checkpoint.json", "metrics.json"} <= set(out["files"])


# Each refused join tries once a second for RAY_NUM_REDIS_GET_RETRIES seconds (default 20).
REFUSED = {"RAY_NUM_REDIS_GET_RETRIES": "2"}


def test_a_join_without_token_mode_names_authentication(head, tmp_path) -> None:
    # The README's recipe before this fix: the token is there, RAY_AUTH_MODE is not.
    out = lab(head, tmp_path, RAY_AUTH_MODE=None, RAY_AUTH_TOKEN=head["token"], **REFUSED)
    message = out["unavailable"]
    assert "token authentication" in message and head["address"] in message, message
    assert "RAY_AUTH_MODE is unset" in message and "Set RAY_AUTH_MODE=token" in message
    assert head["token"] not in message


def test_a_join_with_token_mode_but_no_token_says_so(head, tmp_path) -> None:
    out = lab(head, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=None, **REFUSED)
    assert "RAY_AUTH_MODE=token but this server has no authentication token" in (
        out["unavailable"]), out["unavailable"]


def test_a_join_with_a_wrong_token_says_it_was_refused(head, tmp_path) -> None:
    out = lab(head, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64, **REFUSED)
    message = out["unavailable"]
    assert "refused the authentication token" in message and "RAY_AUTH_TOKEN" in message, (
        message)
    assert "0" * 64 not in message
