"""Work done ahead in a forked child, on another CPU, while this process goes on: start(fn)
forks, the child runs fn() and pickles what it returns into a pipe; the function start returns
waits for that value. Only for work whose failure costs nothing but time: any error in the
child (or no fork) makes the value None, and the caller then does the work itself, where the
error is raised and reported as usual.

The child leaves with os._exit (no atexit handlers, no flushing of the parent's buffers), dies
of SIGINT / SIGTERM like any process, and of SIGPIPE when the parent stopped waiting.
"""
import os
import signal
from typing import Any, Callable, Optional


def start(fn: Callable[[], Any]) -> Callable[[], Optional[Any]]:
    import pickle                        # here: every command imports this module, few fork
    try:
        r, w = os.pipe()
    except OSError:
        return lambda: None
    try:
        child = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return lambda: None
    if child == 0:                       # never returns into the caller's code
        code = 1
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
            os.close(r)
            data = pickle.dumps(fn(), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(w, "wb") as out:
                out.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    done: list = []

    def result() -> Optional[Any]:
        if done:
            return done[0]
        chunks = []
        try:
            while True:
                b = os.read(r, 1 << 20)
                if not b:
                    break
                chunks.append(b)
        finally:
            os.close(r)
            status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        value = pickle.loads(b"".join(chunks)) if status == 0 else None
        done.append(value)
        return value
    return result
