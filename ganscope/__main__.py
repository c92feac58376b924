"""`python -m ganscope ...`: the same command as the `ganscope` script (children of `up` use it)."""

from ganscope.cli import main

if __name__ == "__main__":
    main()
