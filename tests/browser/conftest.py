"""Fixtures of the browser suite: a JupyterLab server on a temp copy of the lessons, headless Chromium.

The suite needs Python playwright and a system Chromium (scripts/install_browser.sh installs
both). Where either is missing every browser test is skipped with the reason, never passed.
`playwright install` (which downloads its own browser) is not used: the suite drives
/usr/bin/chromium, or the browser named by $INT4LAB_CHROMIUM.
"""
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LESSONS = ROOT / "lessons"
SET_UP = "run scripts/install_browser.sh (apt-get install chromium; pip install -e '.[browser]')"


def chromium_path():
    """$INT4LAB_CHROMIUM when set (and only it), else /usr/bin/chromium or chromium on PATH."""
    if os.environ.get("INT4LAB_CHROMIUM"):
        candidates = [os.environ["INT4LAB_CHROMIUM"]]
    else:
        candidates = ["/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="session")
def chromium():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip(f"browser tests need Python playwright, which is not installed: {SET_UP}")
    path = chromium_path()
    if path is None:
        where = os.environ.get("INT4LAB_CHROMIUM") or "/usr/bin/chromium or on PATH"
        pytest.skip(f"browser tests need Chromium, not found ({where}): {SET_UP}")
    return path


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running JupyterLab: url(path) opens a notebook in a workspace of its own."""

    def __init__(self, root, port, token, proc, log):
        self.root, self.port, self.token, self.proc, self.log = root, port, token, proc, log

    def url(self, notebook, workspace):
        return f"http://127.0.0.1:{self.port}/lab/workspaces/{workspace}/tree/{notebook}?token={self.token}"

    def api(self, path, method="GET"):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self):
        """Free the CPU and memory of the last lesson before the next one starts."""
        try:
            for k in self.api("kernels"):
                self.api(f"kernels/{k['id']}", method="DELETE")
        except OSError:
            pass

    def log_tail(self, n=3000):
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@pytest.fixture(scope="session")
def lab(chromium, tmp_path_factory):
    """JupyterLab on 127.0.0.1 with a token, serving a temp folder that holds copies of the lessons.

    The committed notebooks are never opened, so nothing the browser does (autosave, outputs,
    checkpoints) can change them. Kernels get INT4LAB_HOME (a temp home) and INT4LAB_FAST=1.
    User settings and workspaces live in temp folders too, so a learner's own JupyterLab set-up
    cannot change what the suite sees.
    """
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    root.mkdir()
    for nb in sorted(LESSONS.glob("[0-9][0-9]_*.ipynb")):
        shutil.copy(nb, root / nb.name)
    settings = base / "settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    # no news / update pop-ups over the notebook (the machine may be offline anyway)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"checkForUpdates": False, "fetchNews": "false"}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, INT4LAB_HOME=str(base / "home"), INT4LAB_FAST="1",
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(base / "runtime"))
    env.pop("MPLBACKEND", None)    # the lessons must work with the backend a learner's kernel gets
    env["INT4LAB_WIDGETS"] = "1"   # live controls, as a learner gets (nbclient runs turn them off)
    log = base / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")          # CI containers run as root
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Lab(root, port, token, proc, log)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {proc.returncode}:\n{server.log_tail()}")
        try:
            server.api("status")
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"JupyterLab did not answer on port {port} within 90 s:\n{server.log_tail()}")
            time.sleep(0.5)
    print(f"\nJupyterLab on http://127.0.0.1:{port}/lab serving {root} (log: {log})")
    yield server
    server.shutdown_kernels()
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def browser(chromium):
    from playwright.sync_api import Error, sync_playwright
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=chromium, headless=True,
                                  args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        except Error as e:
            pytest.skip(f"Chromium at {chromium} did not start ({str(e).splitlines()[0]}): {SET_UP}")
        yield b
        b.close()


@pytest.fixture
def page(browser, lab):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()
    lab.shutdown_kernels()
