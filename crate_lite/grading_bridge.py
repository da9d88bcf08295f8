"""The one channel between a student's kernel and the kernel that runs the hidden tests
(docs/design.md, section 8: "How the grader isolates a submission").

The hidden tests never run in the student's kernel. They run in a fresh *trusted* kernel
that replays the instructor's notebook; for the duration of one hidden-test cell, the
names that exercise defines (its functions, or its plain values) are bound to
:class:`Proxy` objects. Calling a proxy sends the arguments to the student's kernel, which
calls the student's function there and sends back the result as data:

* trusted -> student: ``pickle`` of the arguments (the student's side may unpickle
  anything; it is the untrusted side), the torch random state, default dtype and grad mode;
* student -> trusted: ``torch.save`` of tensors, numbers, strings, lists, tuples, dicts and
  numpy arrays (as tensors), read with ``torch.load(weights_only=True)``, which refuses any
  other type: no code of the student's runs in the trusted kernel, and nothing the student's
  kernel patched (``torch.equal``, ``checks.cmp``, IPython's exception hooks) is seen by the
  tests. A returned tensor that is a view of an argument comes back as the same view of the
  caller's tensor (so "returns a view, not a copy" stays checkable); the random state is
  carried both ways. Results come back detached from autograd.

:func:`serve` runs in the student's kernel (started by the grader as a last cell, on a
listening socket the grader created and the kernel inherited) and answers each call in a
forked child that is killed at the call's time limit; :func:`bind` and :func:`restore` run
in the trusted kernel around each hidden-test cell.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import signal
import socket
import struct
import sys
import time

_VIEW, _NUMPY = "__crate_grading_view__", "__crate_grading_numpy__"
_HEADER = struct.Struct("!Q")
_SAVED = "__crate_grading_saved__"
_MISSING = object()


class StudentError(Exception):
    """What the student's function raised (or why its answer could not be received)."""


class GradingError(Exception):
    """The hidden test asked for something the grader cannot do (an instructor's problem)."""


# ----------------------------------------------------------------------------- framing
def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def _recv(sock: socket.socket, max_bytes: int, deadline: float | None) -> bytes:
    def read(n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no answer in time")
                sock.settimeout(left)
            chunk = sock.recv(min(n - got, 1 << 20))
            if not chunk:
                raise ConnectionError("connection closed")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    (size,) = _HEADER.unpack(read(_HEADER.size))
    if size > max_bytes:
        raise ValueError(f"answer of {size} bytes is over the limit of {max_bytes}")
    return read(size)


# ----------------------------------------------------------------------------- student side
def _tensors_in(obj, out: list, depth: int = 0) -> list:
    import torch

    if depth > 20:
        return out
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _tensors_in(item, out, depth + 1)
    elif isinstance(obj, dict):
        for item in obj.values():
            _tensors_in(item, out, depth + 1)
    return out


def _encode(value, args: list, depth: int = 0):
    """``value`` as plain data that ``torch.load(weights_only=True)`` accepts."""
    import numpy as np
    import torch

    if depth > 50:
        raise TypeError("the result is nested too deeply")
    if value is None or type(value) in (bool, int, float, complex, str, bytes):
        return value
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if type(t) is not torch.Tensor:
            t = t.as_subclass(torch.Tensor)
        ptr = t.untyped_storage().data_ptr()
        for i, a in enumerate(args):
            if ptr and a.untyped_storage().data_ptr() == ptr and a.dtype == t.dtype and a.device == t.device:
                return {_VIEW: [i, list(t.shape), list(t.stride()), t.storage_offset()]}
        return t
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("the result holds a numpy array of Python objects")
        return {_NUMPY: torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Size):
        return tuple(int(s) for s in value)
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, (list, tuple)):
        items = [_encode(v, args, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if type(k) not in (str, int, float, bool):
                raise TypeError(f"the result has a dict key of type {type(k).__name__}")
            out[k] = _encode(v, args, depth + 1)
        return out
    raise TypeError(
        f"the result is a {type(value).__module__}.{type(value).__qualname__}; the grader receives tensors, "
        "numbers, strings, lists, tuples, dicts and numpy arrays"
    )


def _describe(err: BaseException) -> str:
    try:
        text = str(err)
    except BaseException:  # noqa: BLE001 - a hostile __str__
        text = "(no message)"
    return f"{type(err).__name__}: {text[:2000]}"


def _answer(request: dict, namespace: dict) -> dict:
    import torch

    name = request.get("name")
    try:
        if name not in namespace:
            raise NameError(f"name {name!r} is not defined in the submission")
        target = namespace[name]
        if request.get("op") == "get":
            return {"ok": True, "value": _encode(target, [])}
        args, kwargs = request["args"], request["kwargs"]
        torch.set_rng_state(request["rng"])
        torch.set_default_dtype(request["dtype"])
        with torch.set_grad_enabled(request["grad"]):
            result = target(*args, **kwargs)
        value = _encode(result, _tensors_in((args, kwargs), []))
        return {"ok": True, "value": value, "rng": torch.get_rng_state()}
    except BaseException as err:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too: a student's error
        return {"ok": False, "error": _describe(err)}


def _saved(reply: dict) -> bytes:
    import torch

    buf = io.BytesIO()
    try:
        torch.save(reply, buf)
    except BaseException as err:  # noqa: BLE001
        buf = io.BytesIO()
        torch.save({"ok": False, "error": "the result could not be saved: " + _describe(err)}, buf)
    return buf.getvalue()


def _in_child(request: dict, namespace: dict, call_timeout: float, max_bytes: int) -> bytes:
    """Answer ``request`` in a forked copy of this kernel, killed after ``call_timeout``
    seconds: a function that loops, ignores interrupts or ends its process costs only its
    own call, and every call starts from the state the notebook left."""
    import select

    import torch

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compute, write the answer, leave without running any cleanup
        try:
            os.close(read_end)
            sys.stdout = sys.stderr = io.StringIO()
            torch.set_num_threads(1)
            data = _saved(_answer(request, namespace))
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(data)
        finally:
            os._exit(0)
    os.close(write_end)
    chunks, size, deadline, why = [], 0, time.monotonic() + call_timeout, ""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                why = f"the call took over {call_timeout:g} s and was stopped"
                break
            ready, _, _ = select.select([read_end], [], [], left)
            if not ready:
                continue
            chunk = os.read(read_end, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                why = f"the answer is over {max_bytes} bytes"
                break
    finally:
        os.close(read_end)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if why:
        return _saved({"ok": False, "error": why})
    if not chunks:
        code = os.waitstatus_to_exitcode(status)
        return _saved({"ok": False, "error": f"the call ended its process (exit status {code})"})
    return b"".join(chunks)


def serve(fd: int, *, call_timeout: float = 60.0, max_bytes: int = 1 << 30) -> None:
    """Answer the trusted kernel's requests on the inherited listening socket ``fd``,
    one at a time, each in a forked child (:func:`_in_child`), until the grader ends this
    kernel. Runs in the student's kernel."""
    namespace = get_ipython().user_ns  # noqa: F821 - defined in an IPython kernel
    server = socket.socket(fileno=fd)
    server.settimeout(None)
    while True:
        conn, _ = server.accept()
        with conn:
            try:
                request = pickle.loads(_recv(conn, max_bytes, time.monotonic() + 60))
                _send(conn, _in_child(request, namespace, call_timeout, max_bytes))
            except (OSError, EOFError, ValueError, pickle.UnpicklingError, TimeoutError):
                continue


# ----------------------------------------------------------------------------- trusted side
def _decode(value, args: list, depth: int = 0):
    """Undo :func:`_encode` on data read with ``weights_only=True``; refuse anything else."""
    import torch

    if depth > 50:
        raise StudentError("the answer is nested too deeply")
    if value is None or type(value) in (bool, int, float, complex, str, bytes):
        return value
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().as_subclass(torch.Tensor)
    if isinstance(value, dict) and set(value) == {_VIEW}:
        spec = value[_VIEW]
        ok = isinstance(spec, list) and len(spec) == 4 and isinstance(spec[0], int) and 0 <= spec[0] < len(args)
        ok = ok and all(isinstance(x, list) and all(type(i) is int for i in x) for x in spec[1:3])
        if not ok or type(spec[3]) is not int:
            raise StudentError("the answer holds a malformed view")
        try:
            return args[spec[0]].as_strided(spec[1], spec[2], spec[3])
        except RuntimeError as err:
            raise StudentError(f"the answer holds an impossible view: {err}") from None
    if isinstance(value, dict) and set(value) == {_NUMPY}:
        if not isinstance(value[_NUMPY], torch.Tensor):
            raise StudentError("the answer holds a malformed array")
        return value[_NUMPY].numpy()
    if isinstance(value, (list, tuple)):
        items = [_decode(v, args, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {k: _decode(v, args, depth + 1) for k, v in value.items()}
    raise StudentError(f"the answer holds a {type(value).__name__}")


class Proxy:
    """Stands for the student's ``name`` in the trusted kernel: calling it calls the
    student's function in the student's kernel and returns its result as data."""

    def __init__(self, name: str, address: str, *, timeout: float, max_bytes: int):
        self.name, self.address, self.timeout, self.max_bytes = name, address, timeout, max_bytes

    def __repr__(self) -> str:
        return f"<the submission's {self.name}>"

    def _exchange(self, request: dict):
        import torch

        try:
            payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:
            raise GradingError(f"{self.name}: cannot send the arguments to the submission: {err}") from None
        deadline = time.monotonic() + self.timeout + 5
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(self.address)
                _send(sock, payload)
                data = _recv(sock, self.max_bytes, deadline)
        except TimeoutError:
            raise StudentError(f"{self.name}: no answer within {self.timeout:g} s") from None
        except (OSError, ValueError) as err:
            raise StudentError(f"{self.name}: the submission's kernel did not answer ({err})") from None
        try:
            reply = torch.load(io.BytesIO(data), weights_only=True)
        except Exception as err:
            raise StudentError(f"{self.name}: the answer could not be read safely: {str(err)[:300]}") from None
        if not isinstance(reply, dict) or type(reply.get("ok")) is not bool:
            raise StudentError(f"{self.name}: malformed answer")
        if not reply["ok"]:
            error = reply.get("error")
            raise StudentError(f"{self.name} raised {error if isinstance(error, str) else '(unknown)'}")
        return reply

    def __call__(self, *args, **kwargs):
        import torch

        request = dict(
            op="call",
            name=self.name,
            args=args,
            kwargs=kwargs,
            rng=torch.get_rng_state(),
            dtype=torch.get_default_dtype(),
            grad=torch.is_grad_enabled(),
        )
        reply = self._exchange(request)
        rng = reply.get("rng")
        state = torch.get_rng_state()
        if isinstance(rng, torch.Tensor) and rng.dtype == state.dtype and rng.shape == state.shape:
            torch.set_rng_state(rng)
        return _decode(reply.get("value"), _tensors_in((args, kwargs), []))

    def fetch(self):
        return _decode(self._exchange(dict(op="get", name=self.name)).get("value"), [])


class _Unavailable:
    """Stands for a value the submission did not provide; any use raises StudentError."""

    def __init__(self, name: str, why: str):
        object.__setattr__(self, "_why", f"{name}: {why}")

    def __getattr__(self, _):
        raise StudentError(object.__getattribute__(self, "_why"))

    def __call__(self, *_, **__):
        raise StudentError(object.__getattribute__(self, "_why"))

    def __bool__(self):
        raise StudentError(object.__getattribute__(self, "_why"))


def bind(namespace: dict, names: dict[str, str], address: str, *, timeout: float, max_bytes: int) -> None:
    """Replace each exercise name in ``namespace`` by the submission's: a :class:`Proxy`
    for ``"call"`` names, the fetched value for ``"get"`` names. :func:`restore` undoes it."""
    saved = namespace.setdefault(_SAVED, {})
    for name, kind in names.items():
        if name not in saved:
            saved[name] = namespace.get(name, _MISSING)
        proxy = Proxy(name, address, timeout=timeout, max_bytes=max_bytes)
        if kind == "call":
            namespace[name] = proxy
        else:
            try:
                namespace[name] = proxy.fetch()
            except (StudentError, GradingError) as err:
                namespace[name] = _Unavailable(name, str(err))


def restore(namespace: dict) -> None:
    """Put back the instructor's objects that :func:`bind` replaced."""
    for name, value in namespace.pop(_SAVED, {}).items():
        if value is _MISSING:
            namespace.pop(name, None)
        else:
            namespace[name] = value
