"""ganscope: GAN training diagnostics. The `ganscope` command lives in ganscope.cli."""

__version__ = "0.1.0"
