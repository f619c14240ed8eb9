"""Console entry points. They re-exec once with an optimized BLAS on Linux before MLX is imported."""

from __future__ import annotations

import sys


def _argv() -> list[str]:
    # Entry-point scripts run as `python /path/to/unstar args`; re-exec exactly that.
    return [sys.executable, *sys.argv]


def cli_main() -> None:
    from .engine.backend import maybe_reexec_with_blas

    maybe_reexec_with_blas(_argv())
    from .cli import main

    sys.exit(main())


def gui_main() -> None:
    from .engine.backend import maybe_reexec_with_blas

    maybe_reexec_with_blas(_argv())
    if "--self-test" in sys.argv[1:]:  # check an install or a built .app without opening a window
        from .selftest import run_self_test

        sys.exit(run_self_test())
    from .ui.app import main

    sys.exit(main())
