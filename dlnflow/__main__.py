"""``python -m dlnflow`` is the same as the ``dlnflow`` command."""

from dlnflow.cli import main

if __name__ == "__main__":
    main()
