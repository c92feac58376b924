"""The server's native heap stays in few malloc arenas (server/memory.py).

glibc gives each new thread an arena of its own until it reaches eight per core, and anyio runs request handlers
on up to 40 threads. Arenas beyond the main one are 64 MiB-aligned mappings in /proc/PID/maps, so counting
those after concurrent requests tells how many the server made. The control run, with MALLOC_ARENA_MAX=8 set
by the operator, shows the count does see arenas when the cap is not ours. Real server, real HTTP.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from tests.harness import ServerProc, start_server

HEAP_ALIGN = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit: every non-main arena starts on this boundary


def _mmapped_arenas(pid: int) -> int:
    count = 0
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        start = int(fields[0].split("-")[0], 16)
        if len(fields) == 5 and fields[1] == "rw-p" and start % HEAP_ALIGN == 0:  # anonymous, aligned
            count += 1
    return count


def _concurrent_reads(server: ServerProc, threads: int = 12, each: int = 30) -> None:
    def read() -> None:
        with server.client() as c:
            for _ in range(each):
                assert c.get("/api/runs").status_code == 200

    workers = [threading.Thread(target=read) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc arenas, read from /proc")
@pytest.mark.parametrize(("env", "most"), [({}, 1), ({"MALLOC_ARENA_MAX": "8"}, None)])
def test_request_threads_share_two_malloc_arenas(home: Path, env: dict[str, str], most: int | None) -> None:
    server = start_server(home, **env)
    try:
        _concurrent_reads(server)
        threads = len(list(Path(f"/proc/{server.proc.pid}/task").iterdir()))
        arenas = _mmapped_arenas(server.proc.pid)
    finally:
        server.stop()
    assert threads > 8, threads  # the handlers did run on many threads
    if most is not None:
        assert arenas <= most, f"{arenas} malloc arenas besides the main heap"
    else:  # the operator's own setting wins, and then the threads do spread over more arenas
        assert arenas >= 3, arenas
