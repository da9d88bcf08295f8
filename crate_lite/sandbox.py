"""Run an untrusted program (a student's notebook kernel) in its own process, confined
(docs/design.md, section 8: "How the grader isolates a submission").

Two levels, picked by :func:`isolation_available`:

``namespace`` (Linux with unprivileged user namespaces and ``unshare`` from util-linux)
    The program runs in new user, mount, PID, network, IPC and UTS namespaces. Its file
    system is a fresh tmpfs root holding read-only bind mounts of what Python needs (the
    interpreter, the virtual environment, the ``crate_lite`` package, the data folders,
    a few files of ``/etc``), a size-capped tmpfs working folder, a private ``/tmp`` and
    ``/dev/shm``, its own ``/proc`` (sensitive files hidden or read-only, as container
    runtimes do) and a fresh read-only ``/sys``, and one folder of its own ZeroMQ sockets
    (made read-only once they are bound). The instructor's sources, other submissions, the
    grader's reports and every other process are simply not there; the network is an empty
    namespace. Nested user namespaces are disabled and capabilities dropped before the
    program starts (``SECBIT_NOROOT``, an empty bounding set, ``PR_SET_NO_NEW_PRIVS``):
    this matters when the grader runs as root, since the sandbox's root then has root's
    file permissions. When the sandbox's first process (PID 1 of the namespace) dies, the
    kernel kills every process inside: nothing the submission started survives.

``process`` (everywhere else)
    A new session and process group, a temporary working folder, a clean environment,
    resource limits, and at the end a kill of the process group and of every descendant
    (the grader's worker is a child subreaper on Linux, so orphans come back to it). The
    program runs with the grader's user and can read what that user can read: run the
    grader in a container or as a separate user when students are not trusted.

Both levels set resource limits: address space (``memory_mb``), file size, open files,
core dumps, and processes and threads beyond those the user already runs (ignored by Linux
for root). When the grader runs as root, cgroups cap the tasks and the memory of the
whole submission instead, and their members are killed at the end whatever process tree
they left.

Command line (the sandbox's PID 1; the grader starts it through ``unshare``)::

    python -m crate_lite.sandbox CONFIG_JSON
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

try:  # POSIX only; the grader needs it (the course runs on Linux and macOS)
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None


@dataclass
class Limits:
    """Resource limits of a sandboxed program."""

    memory_mb: int = 4096  # address space (RLIMIT_AS)
    disk_mb: int = 512  # size of the tmpfs working folder (namespace level); largest file (both)
    nofile: int = 1024  # open files
    nproc: int = 512  # processes and threads beyond those the user already runs (not enforced for root)


# ----------------------------------------------------------------------------- Linux details
_MS = dict(RDONLY=1, NOSUID=2, NODEV=4, NOEXEC=8, REMOUNT=32, NOATIME=1024, NODIRATIME=2048, BIND=4096)
_MS.update(REC=16384, PRIVATE=1 << 18, RELATIME=1 << 21)
_ST_TO_MS = {1: _MS["RDONLY"], 2: _MS["NOSUID"], 4: _MS["NODEV"], 8: _MS["NOEXEC"], 1024: _MS["NOATIME"]}
_ST_TO_MS.update({2048: _MS["NODIRATIME"], 4096: _MS["RELATIME"]})
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41}
_PR = dict(SET_PDEATHSIG=1, CAPBSET_DROP=24, SET_SECUREBITS=28, SET_CHILD_SUBREAPER=36, SET_NO_NEW_PRIVS=38)
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
# SECBIT_NOROOT | _LOCKED | SECBIT_NO_SETUID_FIXUP | _LOCKED | SECBIT_KEEP_CAPS_LOCKED
_SECBITS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(libc, src, target, fstype, flags, data=None) -> None:
    enc = [None if s is None else str(s).encode() for s in (src, target, fstype, data)]
    _check(libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {src} on {target}")


def _locked_flags(path: str) -> int:
    """The mount flags of ``path`` a user namespace may not clear on a remount."""
    st = os.statvfs(path).f_flag
    return sum(ms for bit, ms in _ST_TO_MS.items() if st & bit and ms != _MS["RDONLY"])


def set_subreaper(on: bool = True) -> bool:
    """Make this process adopt (or stop adopting) orphaned descendants (Linux); False where
    unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    return _libc().prctl(_PR["SET_CHILD_SUBREAPER"], int(on), 0, 0, 0) == 0


def descendants(pid: int) -> list[int]:
    """PIDs of every descendant of ``pid`` (Linux: from /proc; elsewhere empty)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            ppid = int(ppid)
        except (OSError, IndexError, ValueError):
            continue
        if state in ("Z", "X"):  # exited, waiting to be collected: nothing left to kill
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int, pgid: int | None = None) -> None:
    """SIGKILL the process group ``pgid`` and every descendant of ``pid``, repeatedly until
    none is left (a process forking while it is being killed is caught on the next round)."""
    for _ in range(50):
        victims = descendants(pid)
        if pgid is not None:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for v in victims:
            try:
                os.kill(v, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        _reap_children(victims)
        if not descendants(pid):
            return
        time.sleep(0.02)


def _reap_children(pids) -> None:
    """Collect the exit status of those of ``pids`` that are our children (no zombies)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


# ----------------------------------------------------------------------------- limits
def empty_cgroup(group: Path, timeout: float = 10.0) -> bool:
    """SIGKILL every member of ``group`` until none is left, then remove it; True if removed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        except OSError:
            return not group.exists()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if not pids:
            try:
                group.rmdir()
                return True
            except OSError:  # members still exiting
                pass
        time.sleep(0.02)
    return False


def empty_cgroups(owner: int, timeout: float = 10.0) -> None:
    """Empty and remove the cgroups that process ``owner`` made (a worker that was killed
    before it could)."""
    for base in CGROUP_BASES:
        with contextlib.suppress(OSError):
            for group in base.glob(f"crate-grade-{owner}-*"):
                empty_cgroup(group, timeout)


CGROUP_BASES = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup"))


def make_cgroups(limits: Limits, tag: str = "") -> list[Path]:
    """New cgroups that cap the tasks (``limits.nproc``) and the memory, tmpfs included
    (``memory_mb + disk_mb + 512`` MiB), of what is put in them, where this process may make
    them (as root: cgroup v1 ``pids`` and ``memory`` controllers, or a cgroup v2 root that
    delegates them); else none. RLIMIT_NPROC does not bind root and RLIMIT_AS binds one
    process at a time: these bind the whole submission, fork bombs included."""
    if not sys.platform.startswith("linux"):
        return []
    name = f"crate-grade-{os.getpid()}-{tag}{time.monotonic_ns()}"  # tag: what it is for, in a leak
    memory = str((limits.memory_mb + limits.disk_mb + 512) << 20)
    made = []
    for base in CGROUP_BASES:
        if base.name == "pids":
            settings = {"pids.max": str(limits.nproc)}
        elif base.name == "memory":
            settings = {"memory.limit_in_bytes": memory}
        else:  # v2, used only when no v1 controller was: the root must delegate both
            try:
                delegated = (base / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if made or not {"pids", "memory"} <= set(delegated):
                continue
            settings = {"pids.max": str(limits.nproc), "memory.max": memory}
        group = base / name
        try:
            group.mkdir()
            for key, value in settings.items():
                (group / key).write_text(value)
            made.append(group)
        except OSError:
            with contextlib.suppress(OSError):
                group.rmdir()
    return made


def _user_tasks() -> int:
    """Threads the calling user runs now (Linux), the base that RLIMIT_NPROC counts from."""
    uid, total = str(os.getuid()), 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 4096
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if fields.get("Uid", "").split()[:1] == [uid]:
            total += int(fields.get("Threads", "1").strip() or 1)
    return total


def limit_values(limits: Limits, tasks: int | None = None) -> list[tuple[int, int]]:
    """(resource, value) pairs for :func:`set_limits`, computed before a fork (reading
    /proc in a forked child of a threaded process is best avoided). ``tasks``: the threads
    the user runs now (default: counted here; a namespace cannot count them)."""
    if resource is None:
        return []
    mb = 1 << 20
    wanted = {
        "RLIMIT_AS": limits.memory_mb * mb,
        "RLIMIT_FSIZE": limits.disk_mb * mb,
        "RLIMIT_NOFILE": limits.nofile,
        "RLIMIT_CORE": 0,
        "RLIMIT_NPROC": (_user_tasks() if tasks is None else tasks) + limits.nproc,  # all the user's threads
    }
    out = []
    for name, value in wanted.items():
        which = getattr(resource, name, None)
        if which is None:
            continue
        soft, hard = resource.getrlimit(which)
        out.append((which, value if hard == resource.RLIM_INFINITY else min(value, hard)))
    return out


def set_limits(values: list[tuple[int, int]]) -> None:
    """Set the resource limits of the calling process (inherited by what it starts)."""
    for which, value in values:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass


def _drop_capabilities(libc) -> None:
    """No capabilities survive the next exec, even for the namespace's root."""
    libc.prctl(_PR["SET_SECUREBITS"], _SECBITS, 0, 0, 0)
    for cap in range(64):
        libc.prctl(_PR["CAPBSET_DROP"], cap, 0, 0, 0)
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()
    _check(libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")
    _check(libc.prctl(_PR["SET_NO_NEW_PRIVS"], 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")


# ----------------------------------------------------------------------------- namespace level
def _unshare_cmd() -> list[str] | None:
    exe = shutil.which("unshare")
    if exe is None or not sys.platform.startswith("linux") or platform.machine() not in _SYS_PIVOT_ROOT:
        return None
    return [exe, "--user", "--map-root-user", "--mount", "--pid", "--net", "--ipc", "--uts", "--fork", "--kill-child"]


_SYS_PATH: list[str] | None = None


def _interpreter_path() -> list[str]:
    """``sys.path`` of this interpreter started in isolated mode (no working folder, no
    ``PYTHONPATH``, no user site): the folders a kernel of this environment imports from."""
    global _SYS_PATH
    if _SYS_PATH is None:
        out = subprocess.run(
            [sys.executable, "-I", "-c", "import json, sys; print(json.dumps(sys.path))"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        _SYS_PATH = json.loads(out.stdout) if out.returncode == 0 else []
    return _SYS_PATH


# what of /etc a Python program reads (not all of it: /etc/shadow, keys and the like stay out)
ETC = (
    "ld.so.cache ld.so.conf ld.so.conf.d localtime timezone passwd group nsswitch.conf hosts host.conf "
    "resolv.conf gai.conf protocols services alternatives ssl ca-certificates fonts mime.types os-release "
    "locale.alias matplotlibrc python3"
).split()
# procfs paths hidden (empty) or read-only inside, as container runtimes do: with the grader
# running as root, the sandbox's root has root's file permissions, if no capability
PROC_HIDDEN = ("kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug", "kmsg", "acpi", "scsi")
PROC_READONLY = ("bus", "fs", "irq", "sys", "sysrq-trigger")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def readonly_paths(extra: list[str] | tuple[str, ...] = (), deny: list[str] | tuple[str, ...] = ()) -> list[str]:
    """What a Python program of this environment needs to read: system folders and ``/etc``,
    the interpreter, the virtual environment and the folders it imports from, the
    ``crate_lite`` package, plus ``extra``. Real paths, existing ones only, no duplicates.

    A folder that holds the package (a repository root put on ``sys.path`` by an old-style
    editable install) is replaced by the package folder itself, and no listed folder may
    hold a path of ``deny`` (the instructor's sources, the submissions, the reports' folder)
    or lie inside one: such a folder is left out.
    """
    import crate_lite

    package = str(Path(crate_lite.__file__).resolve().parent)
    candidates = ["/usr", *(f"/etc/{name}" for name in ETC), "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
    candidates += [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)]
    candidates += [*_interpreter_path(), package, *extra]
    deny = [os.path.realpath(d) for d in deny]
    out: list[str] = []
    for c in candidates:
        if not c:
            continue
        if os.path.islink(c) and c.startswith(("/etc/", "/bin", "/sbin", "/lib")) and c not in out:
            out.append(c)  # /bin -> usr/bin, /etc/localtime -> ...: recreated as links, targets bound below
        real = os.path.realpath(c)
        if not os.path.exists(real) or real in out:
            continue
        if real != package and _inside(package, real) and not real.startswith(sys.prefix):
            continue  # a repository root: the package folder is listed on its own
        if any(_inside(d, real) or _inside(real, d) for d in deny):
            continue
        out.append(real)
    # drop paths inside another listed folder (a recursive bind of the parent covers them)
    return [p for p in out if not any(p != q and not os.path.islink(q) and _inside(p, q) for q in out)]


def _init(config: dict) -> int:
    """PID 1 of the sandbox: build the file system, start the program, reap, exit with it."""
    libc = _libc()
    root, work, sockets = config["root"], config["work"], config["sockets"]
    limits = Limits(**config["limits"])
    _mount(libc, None, "/", None, _MS["REC"] | _MS["PRIVATE"])
    _mount(libc, "tmpfs", root, "tmpfs", _MS["NOSUID"] | _MS["NODEV"], "size=16m,mode=755")

    def inside(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    def bind(path: str, *, readonly: bool) -> None:
        target = inside(path)
        if os.path.isdir(path):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
        _mount(libc, path, target, None, _MS["BIND"] | _MS["REC"])
        if readonly:
            flags = _MS["REMOUNT"] | _MS["BIND"] | _MS["RDONLY"] | _locked_flags(path)
            _mount(libc, None, target, None, flags)

    for path, size in ((work, limits.disk_mb), ("/tmp", 128), ("/dev/shm", 128)):
        os.makedirs(inside(path), exist_ok=True)
        _mount(libc, "tmpfs", inside(path), "tmpfs", _MS["NOSUID"] | _MS["NODEV"], f"size={size}m,mode=1777")
    for path in config["readonly"]:
        if os.path.islink(path):
            os.makedirs(os.path.dirname(inside(path)), exist_ok=True)
            os.symlink(os.readlink(path), inside(path))
        elif os.path.exists(path):
            bind(path, readonly=True)
    bind(sockets, readonly=False)
    for dev in ("null", "zero", "full", "random", "urandom"):
        bind(f"/dev/{dev}", readonly=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1")):
        os.symlink(target, inside(f"/dev/{name}"))
    os.symlink("/proc/self/fd/2", inside("/dev/stderr"))
    os.makedirs(inside("/proc"), exist_ok=True)
    _mount(libc, "proc", inside("/proc"), "proc", _MS["NOSUID"] | _MS["NODEV"] | _MS["NOEXEC"])
    os.makedirs(inside("/sys"), exist_ok=True)  # a fresh sysfs, read-only, without the host's cgroup mounts
    _mount(libc, "sysfs", inside("/sys"), "sysfs", _MS["RDONLY"] | _MS["NOSUID"] | _MS["NODEV"] | _MS["NOEXEC"])
    with open(inside("/proc/sys/user/max_user_namespaces"), "w") as f:  # no nested namespace, no fresh /proc
        f.write("0")
    for name in PROC_HIDDEN:
        target = inside(f"/proc/{name}")
        if os.path.isdir(target):
            _mount(libc, "tmpfs", target, "tmpfs", _MS["RDONLY"] | _MS["NOSUID"] | _MS["NODEV"], "size=0")
        elif os.path.exists(target):
            _mount(libc, "/dev/null", target, None, _MS["BIND"])
    for name in PROC_READONLY:
        target = inside(f"/proc/{name}")
        if os.path.exists(target):
            _mount(libc, target, target, None, _MS["BIND"] | _MS["REC"])
            _mount(libc, None, target, None, _MS["REMOUNT"] | _MS["BIND"] | _MS["RDONLY"] | _locked_flags(target))
    old = inside("/.old_root")
    os.makedirs(old)
    _check(libc.syscall(_SYS_PIVOT_ROOT[platform.machine()], root.encode(), old.encode()), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.old_root", 2), "umount old root")  # MNT_DETACH
    os.rmdir("/.old_root")
    _mount(libc, None, "/", None, _MS["REMOUNT"] | _MS["BIND"] | _MS["RDONLY"] | _MS["NOSUID"] | _MS["NODEV"])
    os.chdir(work)
    for src, name in config.get("copy_in", []):
        shutil.copyfile(src, os.path.join(work, name))

    values = limit_values(limits, config["tasks"])

    def child_setup() -> None:
        set_limits(values)
        _drop_capabilities(libc)

    signal.signal(signal.SIGINT, lambda *_: None)  # PID 1: interrupts are for the program
    signal.signal(signal.SIGTERM, lambda *_: None)
    proc = subprocess.Popen(config["argv"], cwd=work, pass_fds=config["pass_fds"], preexec_fn=child_setup)
    # the program binds its sockets at start; then nothing inside may write the socket folder
    deadline = time.monotonic() + config.get("startup_s", 120)
    wanted = config.get("wait_for", [])
    while wanted and not all(os.path.exists(p) for p in wanted):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    _mount(libc, None, sockets, None, _MS["REMOUNT"] | _MS["BIND"] | _MS["RDONLY"] | _locked_flags(sockets))
    status_fd = config.get("status_fd")
    if status_fd is not None:
        os.write(status_fd, b"ready\n")
        os.close(status_fd)
    while True:  # reap everything; leave when the program ends (the namespace then dies)
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        if pid == proc.pid:
            return os.waitstatus_to_exitcode(status) & 0xFF


# ----------------------------------------------------------------------------- the launcher
class Sandbox:
    """One confined program. ``start()`` launches it; ``kill()`` ends it and all it started.

    ``argv`` runs with working folder ``work`` and exactly the environment ``env``; the
    files ``copy_in`` lists as (source, name) are copied into ``work`` first. At the
    ``namespace`` level ``work`` exists only inside (a size-capped tmpfs, e.g.
    ``/submission``), ``copy_in`` sources must lie in ``sockets``, the one folder shared
    with the grader, and ``wait_for`` lists socket paths the program binds at start (the
    folder turns read-only inside once they all exist).
    """

    def __init__(
        self,
        argv: list[str],
        *,
        level: str,
        work: Path,
        sockets: Path,
        env: dict[str, str],
        limits: Limits,
        readonly: list[str] = (),
        pass_fds: tuple[int, ...] = (),
        wait_for: list[str] = (),
        copy_in: list[tuple[Path, str]] = (),
        stdout=None,
    ):
        if level not in ("namespace", "process"):
            raise ValueError(f"level: expected 'namespace' or 'process', got {level!r}")
        self.argv, self.level, self.work, self.sockets = list(argv), level, Path(work), Path(sockets)
        self.env, self.limits, self.readonly = dict(env), limits, list(readonly)
        self.pass_fds, self.wait_for, self.stdout = tuple(pass_fds), list(wait_for), stdout
        self.copy_in = [(Path(src), name) for src, name in copy_in]
        self.proc: subprocess.Popen | None = None
        self.cgroups: list[Path] = []

    def start(self, timeout: float = 120.0) -> None:
        self.cgroups = make_cgroups(self.limits, f"{self.level}-")
        procs = [str(g / "cgroup.procs") for g in self.cgroups]

        def join_cgroup() -> None:  # in the child, before exec: all it starts stays counted
            for path in procs:
                with open(path, "w") as f:
                    f.write(str(os.getpid()))

        if self.level == "process":
            self.work.mkdir(parents=True, exist_ok=True)
            for src, name in self.copy_in:
                shutil.copyfile(src, self.work / name)
            values = limit_values(self.limits)

            def setup() -> None:
                join_cgroup()
                set_limits(values)

            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.work,
                env=self.env,
                pass_fds=self.pass_fds,
                start_new_session=True,
                preexec_fn=setup,
                stdin=subprocess.DEVNULL,
                stdout=self.stdout,
                stderr=subprocess.STDOUT if self.stdout is not None else None,
            )
            return
        status_r, status_w = os.pipe()
        root = self.sockets.parent / "root"
        root.mkdir(exist_ok=True)
        config = dict(
            root=str(root),
            work=str(self.work),
            sockets=str(self.sockets),
            readonly=self.readonly,
            copy_in=[[str(src), name] for src, name in self.copy_in],
            limits=asdict(self.limits),
            tasks=_user_tasks(),
            argv=self.argv,
            pass_fds=list(self.pass_fds),
            wait_for=self.wait_for,
            status_fd=status_w,
        )
        cmd = [*_unshare_cmd(), sys.executable, "-I", "-m", "crate_lite.sandbox", json.dumps(config)]
        try:
            self.proc = subprocess.Popen(
                cmd,
                env=self.env,
                pass_fds=(*self.pass_fds, status_w),
                start_new_session=True,
                preexec_fn=join_cgroup if procs else None,
                stdin=subprocess.DEVNULL,
                stdout=self.stdout,
                stderr=subprocess.STDOUT if self.stdout is not None else None,
            )
        finally:
            os.close(status_w)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                import select

                ready, _, _ = select.select([status_r], [], [], 0.1)
                if ready:
                    if os.read(status_r, 64).startswith(b"ready"):
                        return
                    break
                if self.proc.poll() is not None:
                    break
            raise RuntimeError(f"the sandbox did not start (exit status {self.proc.poll()})")
        finally:
            os.close(status_r)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def interrupt(self) -> None:
        """SIGINT to the program's process group (KeyboardInterrupt in a Python kernel)."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                pass

    def kill(self) -> None:
        """End the program and everything it started."""
        if self.proc is None:
            return
        kill_tree(self.proc.pid, self.proc.pid)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process in uninterruptible sleep
            pass
        for group in self.cgroups:  # whatever escaped the process tree is still in the cgroup
            empty_cgroup(group)


_LEVEL: str | None = None


def isolation_available() -> str:
    """``"namespace"`` when a namespace sandbox starts here, else ``"process"`` (cached)."""
    global _LEVEL
    if _LEVEL is None:
        _LEVEL = "process"
        if _unshare_cmd() is not None:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="crate-probe-") as tmp:
                sockets = Path(tmp) / "s"
                sockets.mkdir()
                box = Sandbox(
                    [sys.executable, "-I", "-c", "import torch, crate_lite.grading_bridge"],
                    level="namespace",
                    work=Path("/submission"),
                    sockets=sockets,
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                    limits=Limits(),
                    readonly=readonly_paths(),
                    stdout=subprocess.DEVNULL,
                )
                try:
                    box.start(timeout=60)
                    box.proc.wait(timeout=60)
                    if box.proc.returncode == 0:
                        _LEVEL = "namespace"
                except (OSError, RuntimeError, subprocess.TimeoutExpired):
                    pass
                finally:
                    box.kill()
    return _LEVEL


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        return _init(json.loads(argv[0]))
    except Exception as err:  # noqa: BLE001 - reported to the grader through the exit status
        print(f"crate_lite.sandbox: {type(err).__name__}: {err}", file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main())
