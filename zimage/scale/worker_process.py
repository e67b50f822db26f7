"""Starting the model worker process and putting its end into words.

A plain subprocess (`python -m zimage.scale.model_worker FD`) rather than multiprocessing's spawn:
spawn re-imports the parent's __main__ (webui.py, and with it the web stack) in the child, and the
child's exit status is the one fact the crash message needs. The two ends talk over a socket pair
wrapped in multiprocessing.connection.Connection (length-prefixed pickled frames). The worker's
log lines go to the same terminal as the page's.
"""
from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection

from ..config import PROJECT_ROOT, Settings
from ..errors import WorkerCrashed
from ..state import LoadState, Status


def spawn_worker(settings: Settings, warm: bool = True) -> tuple[subprocess.Popen, Connection]:
    """A started worker and the page's end of its socket; the settings (and `warm`: import torch at
    once) are its first message."""
    ours, theirs = socket.socketpair()
    # The page's working directory stays the worker's (relative --outputs and --model paths).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "zimage.scale.model_worker", str(theirs.fileno())],
                                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
                                # Ctrl-C and a SIGTERM to the page's group are the page's to handle: it
                                # stops the worker (images made are written); a page that dies closes
                                # the socket, and the worker ends on that EOF.
                                start_new_session=True)
    finally:
        theirs.close()                 # the child has its copy: EOF here once it ends
    conn = Connection(ours.detach())
    conn.send_bytes(pickle.dumps((settings, warm)))
    return proc, conn


def exit_description(returncode: int | None) -> str:
    """'killed by signal 9 (SIGKILL)', 'exit status 1', or 'an unknown cause' (still running)."""
    if returncode is None:
        return "an unknown cause"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"killed by signal {-returncode} ({name})"
    return f"exit status {returncode}"


def crash_error(why: str) -> WorkerCrashed:
    """The error of the image the worker was running when it ended (`why`: exit_description)."""
    return WorkerCrashed(f"The model process ended ({why}); it is restarting.",
                         "Generate this image again; waiting images run once the new model process is up.")


def restarting_status(model: str, crash: WorkerCrashed) -> Status:
    """What the page shows from a worker's end until the new one reports."""
    return Status(model=model, state=LoadState.ERROR, message=crash.message, note="worker restarting",
                  hint="The page stays up; waiting images run on the new model process.")
