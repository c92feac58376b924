"""ganscope: GAN training diagnostics.

The installed distribution owns this one import name. The SDK for your own training
script is its top level (``import ganscope; run = ganscope.init(...)``); the server and
the trainer are ``ganscope.server`` and ``ganscope.trainer``; the command is ``ganscope.cli``.

Nothing heavy is imported here: the server imports this package too, and it never loads torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"

# In a source checkout the product's card keeps server/ and trainer/ at the top of the repository,
# beside this folder; an installed copy has them inside it (pyproject.toml maps the folders with
# `package-dir`). Searching the checkout too makes `ganscope.server` and `ganscope.trainer` resolve to
# the checkout's own folders, whichever checkout's `ganscope` was imported (worktrees, PYTHONPATH).
_here = Path(__file__).resolve().parent
if not (_here / "server").is_dir() and (_here.parent / "server" / "__init__.py").is_file():
    __path__.append(str(_here.parent))  # type: ignore[name-defined]  # noqa: F821 - a package's __path__

# The SDK, loaded on first use (it needs httpx, not torch).
_SDK_NAMES = ("init", "Run", "RunStopped", "replay", "ServerUnavailable")


def __getattr__(name: str) -> Any:
    if name in _SDK_NAMES:
        from ganscope.trainer import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'ganscope' has no attribute {name!r}")


__all__ = ["__version__", *_SDK_NAMES]
