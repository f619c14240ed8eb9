"""The installed `unstar` launcher: BLAS preload re-exec, errors as one line, and the embedded model end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from unstar_gui.engine.backend import find_blas


def _unstar(args, env_extra=None, timeout=300):
    exe = shutil.which("unstar") or os.path.join(os.path.dirname(sys.executable), "unstar")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "UNSTAR_BLAS_PRELOADED")}
    env.update(env_extra or {})
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_help_everywhere():
    for args in (["--help"], ["models", "--help"], ["chat", "--help"], ["doctor", "--help"]):
        r = _unstar(args)
        assert r.returncode == 0 and "usage:" in r.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS preload is Linux-only")
def test_launcher_preloads_blas_once_and_can_be_turned_off():
    on = json.loads(_unstar(["doctor", "--json"]).stdout)
    off = json.loads(_unstar(["doctor", "--json"], {"UNSTAR_NO_BLAS_PRELOAD": "1"}).stdout)
    assert off["blas_preloaded"] == ""
    if find_blas():
        assert on["blas_preloaded"] == find_blas() and "OpenBLAS" in on["backend"]
    else:  # no optimized BLAS on this machine: the launcher must not re-exec at all
        assert on["blas_preloaded"] == ""


def test_error_is_one_line_with_exit_code():
    r = _unstar(["chat", "--model", "missing", "hi"])
    assert r.returncode == 3
    assert r.stderr.strip().count("\n") == 0 and "Unknown model 'missing'" in r.stderr


@pytest.mark.slow
def test_embedded_model_answers_paris_with_no_network(unstar_home):
    r = _unstar(["chat", "What is the capital of France?"], {"HF_HUB_OFFLINE": "1", "UNSTAR_HOME": str(unstar_home)})
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    listing = _unstar(["models", "list", "--json"], {"UNSTAR_HOME": str(unstar_home)})
    models = json.loads(listing.stdout)
    assert [m["id"] for m in models if m["default"]] == ["smollm2-135m-instruct"]
