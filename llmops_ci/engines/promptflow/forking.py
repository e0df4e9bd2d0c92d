"""Forking the warm executor's processes: prompt flow's store made safe to use in a forked child, the OpenAI
client's lazy imports loaded once before forking, and a fork that never returns into the caller's loop. Runs in
the executor's processes only (``worker``)."""

from __future__ import annotations

import gc
import os
import signal
import sys
import traceback
from typing import Any


def fresh_after_fork() -> None:
    """prompt flow's store guards itself with module-level file locks that refuse to work in a forked child
    ("inherited across fork") and caches a sqlite engine whose connections must not cross a fork: a child
    gets new locks and opens its own engine."""
    from filelock import FileLock

    session: Any = sys.modules.get("promptflow._sdk._orm.session")
    if session is not None:
        session.lock = FileLock(session.lock.lock_file)
        session.trace_lock = FileLock(session.trace_lock.lock_file)
        session.session_maker = None
        session.trace_session_maker = None
    utils = sys.modules.get("promptflow._sdk._utilities.general_utils")
    if utils is not None:
        for name in ("_encryption_key_lock", "_refresh_connection_dir_lock"):
            lock = getattr(utils, name, None)
            if lock is not None:
                setattr(utils, name, FileLock(lock.lock_file))


def warm_up() -> None:
    """What the first LLM call of every process would load on its own (the OpenAI client's lazily imported
    resources and types), loaded once here so that forked processes share it instead of each paying for it."""
    try:
        import openai
    except ImportError:
        return
    for client in (openai.OpenAI(api_key="warm-up", base_url="http://127.0.0.1:9/v1", max_retries=0),
                   openai.AzureOpenAI(api_key="warm-up", azure_endpoint="http://127.0.0.1:9", api_version="2024-06-01",
                                      max_retries=0)):
        for resource in ("chat", "completions", "embeddings"):
            found = getattr(client, resource, None)
            if resource == "chat" and found is not None:
                found = found.completions
        client.close()


def fork(child: Any, *close: int) -> int:
    """Fork; the child runs ``child()`` and ends with its code, never returning into the caller's loop. Objects
    alive now are frozen out of the garbage collector's reach first, so that its passes do not copy the pages the
    child shares with this process."""
    gc.freeze()
    pid = os.fork()
    if pid:
        return pid
    code = 4
    try:
        for fd in close:
            os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        fresh_after_fork()
        code = int(child() or 0)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return 0  # not reached
