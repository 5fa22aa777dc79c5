"""Processes depthtune starts and stops itself: free ports, what /proc says about a process, process
groups stopped politely then firmly (never by name), and children told to end with their parent."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1

# Fields of /proc/<pid>/stat counted from the one after the command name: state, ppid, pgrp, ...
_STAT_STATE = 0
_STAT_PGRP = 2
_STAT_STARTTIME = 19


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_bindable(host: str, port: int) -> bool:
    """Whether a server could bind ``host:port`` now (as uvicorn does, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def process_cmdline(pid: int) -> str:
    """The command line of process ``pid`` from /proc (Linux), or "" when it is gone or unreadable."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_stat(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first; Linux), or None when
    the process is gone or unreadable. The name is skipped up to its last ')', as it may hold spaces
    and parentheses itself."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux), or None: with the pid it tells
    a process from a later one that reuses its pid."""
    fields = process_stat(pid)
    try:
        return int(fields[_STAT_STARTTIME]) if fields else None
    except (IndexError, ValueError):
        return None


def process_group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc (Linux); elsewhere
    ``[pgid]`` while ``killpg(pgid, 0)`` succeeds."""
    if pgid <= 1:
        raise ValueError(f"process group {pgid}: not a server's group")
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except ProcessLookupError:
            return []
        except PermissionError:
            return [pgid]
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = process_stat(entry)
        if fields and len(fields) > _STAT_PGRP and fields[_STAT_STATE] != "Z" and int(fields[_STAT_PGRP]) == pgid:
            members.append(int(entry))
    return members


def stop_process_group(pgid: int, timeout: float = 20.0, leader: subprocess.Popen | None = None) -> None:
    """SIGTERM process group ``pgid``, wait until all of it is gone, SIGKILL what is left after
    ``timeout``. ``leader`` (our child, when it is one) is reaped."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if leader is not None:
            try:
                leader.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
        if not process_group_members(pgid):
            return
        time.sleep(0.2)
    logger.warning("process group %d did not stop within %.0f s: SIGKILL", pgid, timeout)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if leader is not None:
        leader.wait()
    deadline = time.monotonic() + 10
    while process_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)


def parent_death_preexec(wanted: bool, sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """``preexec_fn`` that asks Linux to send ``sig`` to the child when its parent dies, or None.
    The kernel sends it when the *thread* that started the child ends, so it is only used from
    the main thread: a server (re)started from a helper thread would otherwise be killed as soon
    as that thread returns."""
    if not wanted:
        return None
    if threading.current_thread() is not threading.main_thread():
        logger.info(
            "started off the main thread: the child is not tied to this process's death (it is stopped by stop())"
        )
        return None
    if sig == signal.SIGTERM:
        return _stop_with_parent

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)

    return preexec


def _stop_with_parent() -> None:
    """In the child before exec: SIGTERM this process when its parent dies (Linux prctl)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
