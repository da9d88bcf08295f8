"""Real-browser helpers: a JupyterLab server started the way ``make lab`` starts it, and
headless Chromium driven through its DevTools protocol (tests/test_browser.py, and the
website test tests/test_site.py, which also records a tab's DevTools events with
``Page.record`` and keeps the browser off the network with ``LOOPBACK_ONLY``).

No driver and no extra package: Chromium is started with ``--remote-debugging-pipe`` and
this module speaks the DevTools protocol (JSON messages ended by a NUL byte) over that
pipe, so no port is opened for the browser. The server is the command ``make -n lab``
prints, run with a few extra flags (no browser, a free port on 127.0.0.1, a token) and
with Jupyter's config, data and runtime folders and IPython's folder in a temporary
directory, so the user's own Jupyter configuration neither changes nor leaks in. The
settings ``make lab`` relies on come from ``make notebooks-config``, run first as
``make lab`` runs it.

Everything started here runs in its own process group (and Jupyter kernels in theirs);
``stop()`` kills those groups, so a failing test leaves no process behind.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
SCREENSHOTS = ROOT / "build" / "browser"
# Chromium switches that keep a test's browser on this machine: every host name resolves to
# nothing except localhost, so a page that asks for a CDN gets an error instead of a download
# (the request itself still shows in the DevTools Network events a test records)
LOOPBACK_ONLY = (
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--disable-domain-reliability",
)
# executable names tried in order on PATH; CRATE_CHROMIUM=/path/to/chrome overrides them
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


# --------------------------------------------------------------------------- processes


def _processes() -> list[tuple[int, int, int, str]]:
    """(pid, parent pid, process group, state) of every process (Linux ``/proc``; empty elsewhere)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        out.append((int(stat.parent.name), int(ppid), int(pgrp), state))
    return out


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (the grader's walk of ``/proc``; imported here, not at the top,
    so that ``python tests/browser.py`` runs with any Python, without the course installed)."""
    from crate_lite.sandbox import descendants

    return descendants(pid)


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_tree(*procs: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop each of ``procs`` (started with ``start_new_session=True``) and everything below
    them: SIGTERM to their process groups and to the groups of their descendants (Jupyter
    starts each kernel in a session of its own), then SIGKILL to whatever is left after
    ``grace`` seconds."""
    groups = set()
    for proc in procs:
        groups.add(proc.pid)
        for pid in _descendants(proc.pid):
            try:
                groups.add(os.getpgid(pid))
            except ProcessLookupError:
                pass
    groups.discard(os.getpgid(0))  # never our own group
    for group in groups:
        _signal_group(group, signal.SIGTERM)

    def gone() -> bool:  # zombies count as gone; without /proc, only our own children are seen
        alive = {g for _, _, g, state in _processes() if state != "Z"}
        return all(proc.poll() is not None for proc in procs) and not (alive & groups)

    try:
        wait_until(gone, timeout=grace, interval=0.05, what="processes stopped")
    except TimeoutError:
        pass
    for group in groups:
        _signal_group(group, signal.SIGKILL)
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass


def wait_until(predicate, *, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Poll ``predicate()`` until it returns a truthy value (returned) or ``timeout`` seconds pass
    (TimeoutError naming ``what`` and the last value seen)."""
    deadline = time.monotonic() + timeout
    value = None
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:.0f} s (last value: {value!r})")
        time.sleep(interval)


# --------------------------------------------------------------------------- JupyterLab


def lab_command() -> str:
    """The shell command of ``make lab``'s recipe (from ``make -n``, without the set-up)."""
    out = subprocess.run(
        ["make", "-n", "-o", str(VENV / ".installed"), "-o", "notebooks-config", "lab"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=_make_env(),
    ).stdout
    lines = [line for line in out.splitlines() if "jupyter lab" in line]
    if len(lines) != 1:
        raise RuntimeError(f"expected one 'jupyter lab' line in `make -n lab`, got:\n{out}")
    return lines[0]


def configure_lab() -> None:
    """``make notebooks-config``, the settings step of ``make lab`` (without the set-up)."""
    subprocess.run(
        ["make", "-s", "-o", str(VENV / ".installed"), "notebooks-config"], cwd=ROOT, check=True, env=_make_env()
    )


def _make_env() -> dict[str, str]:
    """The environment without the variables of an enclosing make (``make test`` runs pytest)."""
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}


class LabServer:
    """A running JupyterLab server: ``url`` (ends with /), ``token``, ``log`` (its output file)."""

    def __init__(self, proc: subprocess.Popen, url: str, token: str, log: Path):
        self.proc, self.url, self.token, self.log = proc, url, token, log

    def page(self, path: str) -> str:
        """The URL that opens ``path`` (relative to the root folder) in JupyterLab."""
        return f"{self.url}lab/tree/{urllib.parse.quote(path)}?token={self.token}"

    def api(self, method: str, path: str, body: dict | None = None, *, timeout: float = 10):
        """Call the server's REST API (``path`` below ``/api/``); the decoded JSON or None."""
        request = urllib.request.Request(
            f"{self.url}api/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
        return json.loads(text) if text else None

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kernel_commands(self) -> list[list[str]] | None:
        """The command lines of the server's kernel processes; None where processes cannot be
        listed (no ``/proc``)."""
        if not Path("/proc/self/cmdline").exists():
            return None
        out = []
        for pid in _descendants(self.proc.pid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            except OSError:
                continue
            if any("ipykernel" in arg for arg in argv):
                out.append(argv)
        return out

    def stop(self) -> None:
        """Stop the server and its kernels (SIGTERM to their process groups, then SIGKILL)."""
        kill_tree(self.proc)


def start_lab(
    home: Path, *, course: Path | None = None, configure: bool = True, env: dict | None = None, timeout: float = 60
) -> LabServer:
    """Start JupyterLab as ``make lab`` does: ``make lab``'s command, run in the checkout or in
    ``course`` (a folder laid out like it: the server's root is its ``chapters/``; a link to the
    checkout's .venv is added), with Jupyter's folders under ``home``. ``configure`` first runs
    ``make notebooks-config`` as ``make lab`` does (it writes the settings into .venv).

    ``env`` adds variables for the server and its kernels. Autosave is turned off in the
    temporary user settings, so a test never rewrites a chapter source.
    """
    if configure:
        configure_lab()
    dirs = {name: home / name for name in ("config", "data", "runtime", "ipython")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    settings = dirs["config"] / "lab" / "user-settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "plugin.jupyterlab-settings").write_text('{"autosave": false}\n')
    token = secrets.token_hex(16)
    extra = [
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=0",  # a free port, read back from the server's runtime file
        f"--IdentityProvider.token={token}",
    ]
    full_env = dict(os.environ)
    for var in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "JUPYTER_PORT", "JUPYTER_TOKEN"):
        full_env.pop(var, None)
    for var in [v for v in full_env if v.startswith(("JUPYTER_", "JUPYTERLAB_"))]:
        full_env.pop(var)  # the user's Jupyter folders and settings stay out
    full_env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        IPYTHONDIR=str(dirs["ipython"]),
        PYTHONDONTWRITEBYTECODE="1",
        **(env or {}),
    )
    cwd = ROOT if course is None else Path(course)
    if not (cwd / ".venv").exists():  # the recipe runs ../.venv/bin/jupyter from chapters/
        (cwd / ".venv").symlink_to(VENV, target_is_directory=True)
    log = home / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", lab_command() + " " + " ".join(extra)],
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def ready():
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            for info in dirs["runtime"].glob("jpserver-*.json"):
                try:
                    return json.loads(info.read_text())
                except ValueError:  # being written
                    return None
            return None

        info = wait_until(ready, timeout=timeout, what="JupyterLab's server file")
        server = LabServer(proc, f"http://127.0.0.1:{info['port']}{info['base_url']}", token, log)
        wait_until(lambda: _status(server), timeout=timeout, what="JupyterLab's /api/status")
        return server
    except BaseException:
        kill_tree(proc)
        raise


def _status(server: LabServer) -> bool:
    if server.proc.poll() is not None:
        raise RuntimeError(f"JupyterLab exited with {server.proc.returncode}:\n{server.log_tail()}")
    try:
        server.api("GET", "status", timeout=2)
        return True
    except (OSError, urllib.error.URLError):
        return False


# --------------------------------------------------------------------------- Chromium


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable: ``$CRATE_CHROMIUM``, else the first of
    ``CHROMIUM_NAMES`` on PATH; None when there is none."""
    explicit = os.environ.get("CRATE_CHROMIUM")
    if explicit:
        return shutil.which(explicit)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def no_chromium_reason() -> str:
    """Why :func:`find_chromium` found nothing, and what to do (a skip message)."""
    explicit = os.environ.get("CRATE_CHROMIUM")
    if explicit:
        return f"CRATE_CHROMIUM={explicit} is not an executable"
    return (
        f"no Chromium on PATH (looked for {', '.join(CHROMIUM_NAMES)}): `make browser-setup` installs "
        "Debian's chromium package when run as root where apt-get works; or set CRATE_CHROMIUM=/path/to/chromium"
    )


class DevToolsError(RuntimeError):
    """A DevTools command failed, or the browser went away."""


def _renumber(fd: int, minimum: int) -> int:
    """A copy of ``fd`` numbered ``minimum`` or above (close-on-exec); ``fd`` is closed."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, minimum)
    os.close(fd)
    return high


class Browser:
    """Headless Chromium on a DevTools pipe. ``open(url)`` gives a :class:`Page`; ``close()``
    kills the browser's process group."""

    def __init__(
        self, executable: str, profile: Path, *, width: int = 1280, height: int = 900, flags: tuple[str, ...] = ()
    ):
        """``flags``: more Chromium command-line switches (e.g. :data:`LOOPBACK_ONLY`)."""
        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile.parent / f"{profile.name}.log"
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # the browser's ends, renumbered 10 and above so that moving them to 3 and 4 cannot clash
        to_browser_r, from_browser_w = (_renumber(fd, 10) for fd in (to_browser_r, from_browser_w))

        args = [
            executable,
            "--headless",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            # tabs in the background keep running at full speed (two notebooks load side by side)
            "--disable-background-timer-throttling",
            "--disable-backgrounding-occluded-windows",
            "--disable-renderer-backgrounding",
            *flags,
            "about:blank",
        ]
        if hasattr(os, "getuid") and os.getuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        # Chromium reads commands on fd 3 and writes replies on fd 4: a shell moves the pipe's
        # ends there and execs the browser (no preexec_fn, unsafe with threads; bash, as dash
        # takes one-digit descriptors only)
        r, w = to_browser_r, from_browser_w
        move = f'exec "$@" 3<&{r} 4>&{w} {r}<&- {w}>&-'
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["bash", "-c", move, "bash", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(r, w),
            )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._lock = threading.Lock()
        self._replies: dict[int, dict] = {}
        self._listeners: list = []  # callables given every event (a message without "id"): Page.record
        self._arrived = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.version = self.send("Browser.getVersion", timeout=30)
        except BaseException:
            self.close()
            raise

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self._arrived:
                        self._replies[message["id"]] = message
                        self._arrived.notify_all()
                else:
                    for listener in list(self._listeners):
                        listener(message)
        with self._arrived:
            self._closed = True
            self._arrived.notify_all()

    def send(self, method: str, params: dict | None = None, *, session: str | None = None, timeout: float = 30):
        """Send one DevTools command and return its result (DevToolsError on an error reply)."""
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            message = {"id": ident, "method": method, "params": params or {}}
            if session:
                message["sessionId"] = session
            data = json.dumps(message).encode() + b"\0"
            try:
                while data:
                    data = data[os.write(self._to_browser, data) :]
            except OSError as e:
                raise DevToolsError(f"{method}: the browser is gone ({e}); its log:\n{self.log_tail()}") from e
        deadline = time.monotonic() + timeout
        with self._arrived:
            while ident not in self._replies:
                if self._closed:
                    raise DevToolsError(f"{method}: the browser closed its pipe; its log:\n{self.log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DevToolsError(f"{method}: no reply within {timeout:.0f} s")
                self._arrived.wait(left)
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise DevToolsError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open(self, url: str = "about:blank") -> Page:
        """A new tab showing ``url``."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, target, session)
        # every tab behaves as the focused one (JupyterLab tracks its current notebook through
        # focus: without this a tab loaded in the background shows no kernel in its status bar)
        page.send("Emulation.setFocusEmulationEnabled", {"enabled": True})
        if url != "about:blank":
            page.goto(url)
        return page

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("Browser.close", timeout=5)
            except DevToolsError:
                pass
        kill_tree(self.proc, grace=3)
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass


class Page:
    """One tab: evaluate JavaScript, wait for DOM conditions, click, type, screenshot."""

    def __init__(self, browser: Browser, target: str, session: str):
        self.browser, self.target, self.session = browser, target, session

    def send(self, method: str, params: dict | None = None, *, timeout: float = 30):
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def record(self, *methods: str) -> list[dict]:
        """A list that collects, from now on, the ``params`` of this tab's DevTools events named
        in ``methods`` (``"Network.requestWillBeSent"``, ``"Runtime.exceptionThrown"``, ...), each
        with its ``method`` added. Events of a domain come only once it is enabled
        (``page.send("Network.enable")``)."""
        seen: list[dict] = []

        def listen(message: dict) -> None:
            if message.get("sessionId") == self.session and message.get("method") in methods:
                seen.append({"method": message["method"], **message.get("params", {})})

        self.browser._listeners.append(listen)
        return seen

    def bring_to_front(self) -> None:
        """Make this the active tab (input goes to it; screenshots show it)."""
        self.send("Page.bringToFront")

    def goto(self, url: str) -> None:
        reply = self.send("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise DevToolsError(f"navigating to {url}: {reply['errorText']}")

    def evaluate(self, expression: str, *, timeout: float = 30):
        """The value of a JavaScript expression in the page (promises awaited; JSON values)."""
        reply = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise DevToolsError(f"JavaScript error in {expression!r}: {text}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 30, what: str | None = None):
        """Poll a JavaScript expression until it is truthy; returns its value."""
        return wait_until(lambda: self.evaluate(expression), timeout=timeout, what=what or expression)

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the centre of the first element matching
        ``selector``, scrolled into view first."""
        box = self.evaluate(
            f"""(() => {{
                const el = document.querySelector({json.dumps(selector)});
                if (!el) return null;
                el.scrollIntoView({{block: "center"}});
                const r = el.getBoundingClientRect();
                return {{x: r.left + r.width / 2, y: r.top + r.height / 2}};
            }})()"""
        )
        if box is None:
            raise DevToolsError(f"click: nothing matches {selector!r}")
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
            )

    def press(self, key: str, *, shift: bool = False, ctrl: bool = False) -> None:
        """Press and release one key (``"Enter"``, ``"Escape"``, a letter), with modifiers."""
        named = {"Enter": (13, "\r"), "Escape": (27, ""), "Tab": (9, "\t"), "Backspace": (8, "")}
        if key in named:
            code, text = named[key]
        elif len(key) == 1:
            code, text = ord(key.upper()), key
        else:
            raise ValueError(f"press: unknown key {key!r} (one character, or one of {sorted(named)})")
        modifiers = (8 if shift else 0) | (2 if ctrl else 0)
        physical = key if key in named else ("Digit" if key.isdigit() else "Key") + key.upper()
        down = {"key": key, "code": physical, "windowsVirtualKeyCode": code, "modifiers": modifiers}
        self.send(
            "Input.dispatchKeyEvent",
            {"type": "keyDown", "text": text, **down} if text else {"type": "rawKeyDown", **down},
        )
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **down})

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the visible page."""
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.browser.send("Target.closeTarget", {"targetId": self.target}, timeout=5)
        except DevToolsError:
            pass


# --------------------------------------------------------------------------- JupyterLab pages

# what a student sees of the notebook in the current tab, in one round trip
_NOTEBOOK_STATE = """(() => {
    const panel = document.querySelector(".jp-NotebookPanel:not(.lm-mod-hidden)");
    const text = (el) => (el ? el.textContent.replace("\\u00b6", "").trim() : null);
    const cell = panel && panel.querySelector(".jp-Notebook .jp-CodeCell");
    return {
        notebook: !!panel,
        title: text(panel && panel.querySelector(".jp-MarkdownCell .jp-RenderedMarkdown h1")),
        math: panel ? panel.querySelectorAll(".jp-RenderedMarkdown mjx-container").length : 0,
        dialogs: [...document.querySelectorAll(".jp-Dialog")].map((d) => d.innerText.slice(0, 300)),
        toasts: [...document.querySelectorAll(".Toastify__toast")].map((t) => t.innerText.slice(0, 300)),
        kernel: text(panel && panel.querySelector(".jp-Toolbar-kernelName")),
        status: (panel && panel.querySelector(".jp-Notebook-ExecutionIndicator")?.dataset.status) ?? null,
        statusbar: [...document.querySelectorAll("#jp-main-statusbar .jp-StatusBar-TextItem")]
            .map((e) => e.textContent.trim()).find((t) => t.includes(" | ")) ?? null,
        prompt: text(cell && cell.querySelector(".jp-InputPrompt")),
        output: cell ? [...cell.querySelectorAll(".jp-OutputArea-output")].map((o) => o.innerText).join("\\n") : null,
    };
})()"""


def notebook_state(page: Page) -> dict:
    """The open notebook as the page shows it: ``notebook`` (a notebook panel is shown),
    ``title`` (its first rendered h1), ``math`` (MathJax elements in rendered markdown),
    ``dialogs`` and ``toasts`` (texts of open modal dialogs and notifications), ``kernel``
    (the toolbar's kernel name), ``status`` (the execution indicator: idle, busy, ...; it
    says idle before any kernel is connected too), ``statusbar`` (the status bar's kernel item,
    "Python 3 (ipykernel) | Idle" once the kernel is connected and idle),
    ``prompt`` and ``output`` (the first code cell's prompt and output text)."""
    keys = ("notebook", "title", "math", "dialogs", "toasts", "kernel", "status", "statusbar", "prompt", "output")
    try:
        state = page.evaluate(_NOTEBOOK_STATE) or {}
    except DevToolsError as e:  # e.g. the page is still navigating: nothing shown yet
        state = {"error": str(e)}
    return {key: state.get(key) for key in keys} | ({"error": state["error"]} if "error" in state else {})


def wait_for_notebook(page: Page, *, timeout: float = 120) -> dict:
    """Wait until the notebook has rendered its title and its kernel is attached and idle."""

    last = {}

    def ready():
        last.update(notebook_state(page))
        attached = last["kernel"] not in (None, "", "No Kernel")
        idle = last["status"] == "idle" and last["statusbar"] == f"{last['kernel']} | Idle"
        return dict(last) if last["title"] and attached and idle else None

    try:
        return wait_until(ready, timeout=timeout, what="notebook rendered, kernel attached and idle")
    except TimeoutError as e:
        raise TimeoutError(f"{e}; the page shows {last}") from None


def run_first_code_cell(page: Page, *, timeout: float = 120) -> dict:
    """Select the first code cell with a click on its prompt and run it with Shift+Enter, as a
    student does; wait until its prompt shows execution count 1 and the kernel is idle again."""
    page.click(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell .jp-InputPrompt")
    page.press("Enter", shift=True)

    last = {}

    def done():
        last.update(notebook_state(page))
        idle = last["status"] == "idle" and (last["statusbar"] or "").endswith(" | Idle")
        return dict(last) if (last["prompt"] or "").startswith("[1]") and idle else None

    try:
        return wait_until(done, timeout=timeout, what="first code cell run ([1] in its prompt, kernel idle)")
    except TimeoutError as e:
        raise TimeoutError(f"{e}; the page shows {last}") from None


if __name__ == "__main__":  # python tests/browser.py: the browser the tests use (exit status 1: none)
    found = find_chromium()
    print(found or no_chromium_reason())
    raise SystemExit(0 if found else 1)
