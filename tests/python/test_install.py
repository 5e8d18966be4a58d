"""`pip install ./client/python` into a fresh venv, offline, and the package finds libemad.

The venv sees the system's numpy and torch (--system-site-packages); pip
builds with the system's setuptools (--no-index --no-build-isolation: no
network). The source is copied first, so the build leaves nothing in the tree.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import TOP, scaled

CHECK = textwrap.dedent("""
    import sys, emad
    assert "/venv/" in emad.__file__, emad.__file__
    with emad.Client(sys.argv[1]) as c:
        c.create("pip", exist_ok=True)
        c.push("pip", 1, {"w": __import__("numpy").ones(3, "float32")})
        print("OK", c.library, c.list()[0].step)
""")


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    try:
        import venv as _venv  # noqa: F401
        import ensurepip  # noqa: F401
    except ImportError:
        pytest.skip("python3-venv is not installed")
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    shutil.copytree(os.path.join(TOP, "client", "python"), str(src),
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info",
                                                  "_paths.py"))
    env = clean_env()
    vdir = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(vdir)],
                   check=True, env=env, timeout=scaled(300))
    py = str(vdir / "bin" / "python")
    r = subprocess.run([py, "-m", "pip", "install", "--no-index", "--no-build-isolation",
                        "--disable-pip-version-check", "-q", str(src)],
                       env=env, capture_output=True, text=True, timeout=scaled(600))
    assert r.returncode == 0, r.stdout + r.stderr
    return py, root


def clean_env(**extra):
    """The environment without the test's own path to the package and library."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "EMAD_LIBRARY", "PKG_CONFIG_PATH")}
    env.update(extra)
    return env


def build_lib():
    return os.environ.get("EMAD_LIBRARY") or os.path.join(TOP, ".libs", "libemad.so")


def test_installed_package_with_emad_library(venv, daemon):
    py, root = venv
    r = subprocess.run([py, "-c", CHECK, daemon.url], env=clean_env(EMAD_LIBRARY=build_lib()),
                       capture_output=True, text=True, cwd=str(root), timeout=scaled(300))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK ") and r.stdout.split()[-1] == "1"


def test_installed_package_finds_libemad_through_pkg_config(venv, daemon, tmp_path):
    if shutil.which("pkg-config") is None:
        pytest.skip("no pkg-config")
    py, root = venv
    libdir = tmp_path / "prefix" / "lib"
    (libdir / "pkgconfig").mkdir(parents=True)
    shutil.copy(os.path.realpath(build_lib()), str(libdir / "libemad.so.0"))
    (libdir / "pkgconfig" / "libemad.pc").write_text(
        "libdir=%s\n\nName: libemad\nDescription: test\nVersion: 0.1.0\nLibs: -L${libdir} "
        "-lemad\n" % libdir)
    env = clean_env(PKG_CONFIG_PATH=str(libdir / "pkgconfig"))
    r = subprocess.run([py, "-c", CHECK, daemon.url], env=env, capture_output=True, text=True,
                       cwd=str(root), timeout=scaled(300))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[1] == str(libdir / "libemad.so.0"), r.stdout
