"""Options and clock shared by the CPU/GPU step-timing benchmarks (overhead, throughput, stabilisers, watch)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

Clock = Callable[[], float]


def add_clock_options(ap: argparse.ArgumentParser, clock_note: str = "") -> None:
    """--threads and --clock, as every timing benchmark takes them."""
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time, or this process's CPU time (steadier on a shared machine; use with "
                         "--threads 1, since idle-spinning threads would count" + clock_note + ")")


def clock_from(args: argparse.Namespace) -> Clock:
    """The chosen clock, with torch's thread count set first when asked."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return time.process_time if args.clock == "cpu" else time.perf_counter
