"""Loading libemad: clear errors for a missing or wrong library; ctypes layouts match the header.

Each loading case runs in a fresh interpreter, since the package loads the
library once per process.
"""

import ctypes
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import emad
from emad import _lib
from conftest import TOP, scaled

PYPATH = os.path.join(TOP, "client", "python")


def run_python(code, env_extra, tmp_path):
    env = dict(os.environ, PYTHONPATH=PYPATH, **env_extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=scaled(300))


PROBE = """
    import emad
    try:
        emad.Client("tcp://127.0.0.1:1")
    except emad.LibraryError as e:
        assert isinstance(e, ImportError) and isinstance(e, emad.Error) and e.code is None
        print("LIBRARY-ERROR:", e)
    else:
        print("NO ERROR")
"""


def test_missing_library_names_the_path_and_the_variable(tmp_path):
    missing = str(tmp_path / "nowhere" / "libemad.so")
    r = run_python(PROBE, {"EMAD_LIBRARY": missing}, tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "LIBRARY-ERROR:" in out, out
    assert missing in out and "EMAD_LIBRARY" in out and "no such file" in out


def test_import_works_without_the_library(tmp_path):
    # importing emad never needs libemad: only the first client does
    r = run_python("import emad; print(emad.__version__)", {"EMAD_LIBRARY": "/nonexistent.so"},
                   tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "0.1.0", r.stderr


def test_a_file_that_is_not_a_library(tmp_path):
    bogus = tmp_path / "libemad.so"
    bogus.write_text("not an ELF file\n")
    r = run_python(PROBE, {"EMAD_LIBRARY": str(bogus)}, tmp_path)
    assert "LIBRARY-ERROR:" in r.stdout and str(bogus) in r.stdout, r.stdout + r.stderr


def _build_fake(tmp_path, source, name):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build a fake library")
    src = tmp_path / (name + ".c")
    src.write_text(source)
    out = tmp_path / (name + ".so")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(src)], check=True,
                   timeout=scaled(300))
    return str(out)


def test_wrong_version_library(tmp_path):
    symbols = "".join("int %s(void) { return 0; }\n" % s for s in _lib._CORE
                      if s != "emad_version")
    fake = _build_fake(tmp_path, symbols + 'const char *emad_version(void) { return "9.3.1"; }\n',
                       "libwrong")
    r = run_python(PROBE, {"EMAD_LIBRARY": fake}, tmp_path)
    assert "LIBRARY-ERROR:" in r.stdout, r.stdout + r.stderr
    assert "9.3.1" in r.stdout and "0.1" in r.stdout and fake in r.stdout


def test_library_without_the_emad_symbols(tmp_path):
    fake = _build_fake(tmp_path, 'const char *emad_version(void) { return "0.1.0"; }\n', "libthin")
    r = run_python(PROBE, {"EMAD_LIBRARY": fake}, tmp_path)
    assert "LIBRARY-ERROR:" in r.stdout, r.stdout + r.stderr
    assert "emad_push" in r.stdout and fake in r.stdout


def test_the_build_tree_library_is_found_without_environment(tmp_path):
    built = os.path.join(TOP, ".libs", "libemad.so")
    if not os.path.exists(built):
        pytest.skip("no in-tree build at %s" % built)
    env = {k: v for k, v in os.environ.items() if k != "EMAD_LIBRARY"}
    env["PYTHONPATH"] = PYPATH
    r = subprocess.run([sys.executable, "-c", "import emad; print(emad.library_path())"], env=env,
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=scaled(300))
    assert r.returncode == 0, r.stderr
    assert os.path.realpath(r.stdout.strip()) == os.path.realpath(built)


def test_ctypes_structs_match_the_c_header(tmp_path):
    """sizeof and every field offset of the mirrored structs, as the C compiler sees them."""
    header = os.path.join(TOP, "include", "emad.h")
    structs = {
        "emad_tensor": _lib.Tensor,
        "emad_options": _lib.Options,
        "emad_push_result": _lib.PushResult,
        "emad_pull_options": _lib.PullOptions,
        "emad_model_info": _lib.ModelInfoC,
        "emad_stat": _lib.Stat,
        "emad_model_config": _lib.ModelConfig,
        "emad_model": _lib.Model,
    }
    lines = []
    for cname, py in structs.items():
        lines.append('printf("%s %%zu\\n", sizeof(%s));' % (cname, cname))
        for field, _ in py._fields_:
            lines.append('printf("%s.%s %%zu\\n", offsetof(%s, %s));'
                         % (cname, field, cname, field))
    src = ("#include <stddef.h>\n#include <stdio.h>\n#include \"emad.h\"\n"
           "int main(void) {\n%s\nreturn 0;\n}\n" % "\n".join(lines))
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    (tmp_path / "layout.c").write_text(src)
    exe = str(tmp_path / "layout")
    subprocess.run([cc, "-I", os.path.dirname(header), "-o", exe, str(tmp_path / "layout.c")],
                   check=True, timeout=scaled(300))
    out = subprocess.run([exe], capture_output=True, text=True, check=True,
                         timeout=scaled(300)).stdout
    c_layout = dict(line.rsplit(" ", 1) for line in out.splitlines())
    for cname, py in structs.items():
        assert int(c_layout[cname]) == ctypes.sizeof(py), cname
        for field, _ in py._fields_:
            assert int(c_layout["%s.%s" % (cname, field)]) == getattr(py, field).offset, \
                (cname, field)


def test_error_codes_match_the_library():
    lib = _lib.lib()
    for name, code in emad.ERRORS.items():
        assert lib.fn("errname")(code).decode() == name
    assert emad.ESHAPE == -1007 and emad.library_version() == "0.1.0"
    # the names come from the library: all 31 daemon and 6 client codes
    assert len(emad.ERRORS) == 37 and emad.ECONFLICT == -1026 and emad.EAUTH == -1027 and emad.ESPLIT == -1030 and emad.ELAYOUT == -1031 and emad.EIO == -1106
