"""`av-scene-vlm bag|index` in a child process that reports its stages, to SIGKILL it at chosen points
(issue 18, point 6).

Why a forkserver: a fresh interpreter needs ~6 s on the 2-core CI machine to import torch,
transformers and LanceDB, too slow for tens of runs. Python's forkserver imports them once (only
imports: no thread pool or runtime is started before the fork) and forks each run from it, so a run
starts in well under a second, and it is still a process of its own that SIGKILL ends at once.

The child wraps the stages of the tool (decode a frame, classify a batch, write) so that each sends
an event on a pipe before it runs; the test kills the child on the event it chose.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Imports only (no threads, no runtimes): LanceDB itself is imported by the child, its heavy pure
# Python dependencies here.
PRELOAD = [
    "numpy",
    "cv2",
    "torch",
    "transformers",
    "pyarrow.dataset",
    "pandas",
    "lance_namespace",
    "rosbags.rosbag2",
    "av_scene_vlm.cli.main",
    "av_scene_vlm.core.engine",
    "av_scene_vlm.core.bag",
]

_CTX: Any = None


def context() -> Any:
    """The forkserver context (started on first use, with the modules above preloaded)."""
    global _CTX
    if _CTX is None:
        _CTX = mp.get_context("forkserver")
        _CTX.set_forkserver_preload(PRELOAD)
    return _CTX


def _wrap(owner: Any, name: str, event: str, send: Callable[[str], None]) -> None:
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        send(event)
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)


def limit_file_size(max_bytes: int) -> None:
    """Make writes past `max_bytes` of any file fail (EFBIG), as on a disk that has filled up:
    RLIMIT_FSIZE, with SIGXFSZ ignored so the write returns an error instead of killing us."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


def mount_read_only(path: str) -> None:
    """Make `path` a read-only bind mount in a mount namespace of this process's own (EROFS even
    for root, who ignores permission bits); needs CAP_SYS_ADMIN. OSError when not allowed."""
    import ctypes
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rdonly, ms_remount, ms_bind, ms_rec, ms_private = 0x20000, 1, 32, 4096, 16384, 1 << 18
    target = os.fsencode(path)
    steps = [
        lambda: libc.unshare(clone_newns),
        lambda: libc.mount(None, b"/", None, ms_rec | ms_private, None),  # nothing propagates out
        lambda: libc.mount(target, target, None, ms_bind, None),
        lambda: libc.mount(None, target, None, ms_remount | ms_bind | ms_rdonly, None),
    ]
    for step in steps:
        if step() != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))


def can_mount_read_only() -> bool:
    """Whether `mount_read_only` works here (tried in a child process)."""
    ctx = context()
    proc = ctx.Process(target=mount_read_only, args=("/",))
    proc.start()
    proc.join()
    return proc.exitcode == 0


def _child(argv: list[str], conn: Any, log: str, file_size: int | None, read_only: str | None) -> None:
    """Run `av-scene-vlm argv` with stage events on `conn` and its stdout and stderr in `log`; exit
    with the tool's exit code."""
    import os
    import threading

    out = open(log, "w")  # noqa: SIM115 - the process's own stdout/stderr until it exits
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    sys.stdout = sys.stderr = out

    import tqdm
    from av_scene_vlm.cli.main import main

    # tqdm's default lock is a multiprocessing one, whose semaphore a killed child cannot release
    # (Python's resource tracker then warns about leaked semaphores at exit).
    tqdm.tqdm.set_lock(threading.RLock())

    lock = threading.Lock()  # decoding runs on a prefetch thread

    def send(event: str) -> None:
        with lock:
            conn.send(event)

    from av_scene_vlm.core.engine import ZeroShotEngine

    for method in ("classify", "submit"):  # the engine's entry points, whichever the tool calls
        if hasattr(ZeroShotEngine, method):
            _wrap(ZeroShotEngine, method, "embed", send)
    if argv[0] == "index":
        from av_scene_vlm.core.fleet import frames, store

        _wrap(frames, "thumbnail", "decode", send)  # once per decoded frame
        for method in ("flush", "finish_bag", "begin_bag", "optimize"):
            _wrap(store.FleetIndex, method, f"write:{method}", send)
        _wrap(store.FleetIndex, "_connect", "write:create", send)  # then the tables are made
    else:
        from av_scene_vlm.core.bag import process, writing

        _wrap(process, "decode", "decode", send)
        _wrap(writing.ResultWriter, "write", "write", send)
    if read_only:
        mount_read_only(read_only)
    if file_size is not None:
        limit_file_size(file_size)
    code = main(argv)
    send(f"exit {code}")
    conn.close()
    out.flush()
    sys.exit(code)


@dataclass
class Run:
    """One child run: the events it sent, how it ended (exit code, or -9 when killed)."""

    events: list[str] = field(default_factory=list)
    exitcode: int | None = None
    killed_at: str = ""
    seconds: float = 0.0
    output: str = ""  # stdout and stderr

    def count(self, stage: str) -> int:
        return sum(e.split(":")[0] == stage for e in self.events)


def run(
    argv: list[str],
    kill_at: tuple[str, int] | None = None,
    delay: float = 0.0,
    timeout: float = 120,
    file_size: int | None = None,
    read_only: str | None = None,
) -> Run:
    """Run `av-scene-vlm argv` in a forked child; with `kill_at` = (stage, n), SIGKILL it `delay`
    seconds after its n-th event of that stage ("decode", "embed", "write"). `file_size`: no file
    may grow past it (disk full); `read_only`: that directory is mounted read-only for the child."""
    import tempfile

    ctx = context()
    recv, send = ctx.Pipe(duplex=False)
    log = tempfile.NamedTemporaryFile("r", suffix=".log")  # noqa: SIM115 - read after the child ends
    proc = ctx.Process(target=_child, args=(argv, send, log.name, file_size, read_only))
    t0 = time.monotonic()
    proc.start()
    send.close()
    out = Run()
    seen = 0
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if not recv.poll(0.05):
            if not proc.is_alive() and not recv.poll(0):
                break
            continue
        try:
            event = recv.recv()
        except EOFError:
            break
        out.events.append(event)
        if kill_at and event.split(":")[0] == kill_at[0]:
            seen += 1
            if seen == kill_at[1]:
                if delay:
                    time.sleep(delay)
                proc.kill()
                out.killed_at = f"{event} #{seen} + {delay * 1e3:.1f} ms"
                break
    proc.join(timeout=max(1.0, deadline - time.monotonic()))
    if proc.is_alive():
        proc.kill()
        proc.join()
        raise TimeoutError(f"av-scene-vlm {' '.join(argv)} did not finish in {timeout} s: {out.events[-5:]}")
    recv.close()
    out.output = log.read()
    log.close()
    out.exitcode = proc.exitcode
    out.seconds = time.monotonic() - t0
    return out
