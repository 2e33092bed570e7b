"""The one build script: the portable hnswlib wheel, the edgenode wheel, and the single-file binary.

    python .ci/release/build.py hnswlib   # build/wheelhouse/hnswlib-*.whl for the stated CPU baseline
    python .ci/release/build.py wheel     # dist/edgenode-<version>-py3-none-any.whl
    python .ci/release/build.py binary    # dist/edgenode-<version>-<os>-<arch> (needs the two above)

`make setup`, `make binary`, `.ci/run` and the Dockerfile all call it, so what CI tests is what
the image and the release ship. The binary is frozen from a clean venv holding only the built
wheels (never this checkout), with PyInstaller in one-dir mode, checked instruction by instruction
against the baseline (.ci/release/isa_check.py), and packed behind .ci/release/launcher.sh, which
unpacks it once per build into a cache directory (README "Install" says why this shape).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import venv
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from isa_check import check, native_files, runtime_dispatch  # a sibling script, not a package

ROOT = Path(__file__).resolve().parents[2]  # this file is .ci/release/build.py
BUILD = ROOT / "build"
WHEELHOUSE = BUILD / "wheelhouse"
DIST = ROOT / "dist"
HNSWLIB = "hnswlib==0.8.0"
PYINSTALLER = "pyinstaller>=6.10,<7"

# Compiled code targets a stated CPU baseline, never -march=native (a binary built on one host
# would die with SIGILL on an older one). x86-64-v2 (SSE4.2, POPCNT; 2009 onwards) rather than v3
# (AVX2): edge hosts include Atom/Celeron-class CPUs without AVX. README "Install" has the cost.
BASELINES = {"x86_64": "x86-64-v2", "amd64": "x86-64-v2", "arm64": "armv8-a", "aarch64": "armv8-a"}
# The newest glibc symbol version the Linux binary may need (README "Install"): set by the build
# host (libpython and libstdc++ are bundled from it; Debian 12 here). A build needing more fails.
GLIBC_FLOOR = (2, 36)
# Distributions whose metadata the binary must carry (`edgenode version`, importlib.metadata users).
METADATA = ["edgenode", "libsql", "apsw", "sqlite-vec", "hnswlib", "starlette", "msgspec", "uvicorn", "httpx"]


def machine() -> str:
    return platform.machine().lower()


def baseline() -> str:
    """BASELINES for this machine; EDGENODE_CPU_BASELINE=x86-64-v3 builds for a fleet known to
    have AVX2 (hnswlib searches ~2x faster at dim 384; README "Install")."""
    if os.environ.get("EDGENODE_CPU_BASELINE"):
        return os.environ["EDGENODE_CPU_BASELINE"]
    try:
        return BASELINES[machine()]
    except KeyError:
        raise SystemExit(f"no CPU baseline is stated for {machine()}; add one to BASELINES") from None


def version() -> str:
    text = (ROOT / "edgenode" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    assert match, "edgenode/__init__.py has no __version__"
    return match.group(1)


def binary_name() -> str:
    system = {"darwin": "macos"}.get(sys.platform, sys.platform)
    return f"edgenode-{version()}-{system}-{machine()}"


def run(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    print("+", " ".join(map(str, args)), flush=True)
    subprocess.run([str(a) for a in args], check=True, env=env, cwd=cwd)


def hnswlib_wheel() -> Path:
    """hnswlib has no wheels on PyPI: build one for the baseline (its setup.py adds -march=native
    unless HNSWLIB_NO_NATIVE is set; CFLAGS/CXXFLAGS then carry the baseline)."""
    stamp = WHEELHOUSE / f"hnswlib.{baseline()}.stamp"
    found = sorted(WHEELHOUSE.glob("hnswlib-*.whl"))
    if found and stamp.exists():
        return found[-1]
    for old in found:
        old.unlink()
    flags = f"-march={baseline()}" + (" -mtune=generic" if baseline().startswith("x86") else "")
    env = {**os.environ, "HNSWLIB_NO_NATIVE": "1", "CFLAGS": flags, "CXXFLAGS": flags}
    # --no-cache-dir: pip's wheel cache does not key on the flags and could hand back a native build.
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-cache-dir",
        "--no-binary",
        "hnswlib",
        HNSWLIB,
        "-w",
        WHEELHOUSE,
        env=env,
    )
    unpacked = BUILD / "hnswlib-check"
    shutil.rmtree(unpacked, ignore_errors=True)
    wheel = sorted(WHEELHOUSE.glob("hnswlib-*.whl"))[-1]
    shutil.unpack_archive(wheel, unpacked, "zip")
    check(unpacked, baseline(), allow={})
    stamp.write_text(flags + "\n")
    return wheel


def edgenode_wheel() -> Path:
    DIST.mkdir(exist_ok=True)
    for old in DIST.glob("edgenode-*.whl"):
        old.unlink()
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", ROOT, "-w", DIST)
    shutil.rmtree(ROOT / "build" / "lib", ignore_errors=True)
    return sorted(DIST.glob("edgenode-*.whl"))[-1]


def freeze_venv(wheel: Path) -> Path:
    """A fresh venv with the built wheels and PyInstaller only: the binary holds what a user's
    `pip install` of the wheel would, not whatever this checkout's dev venv has."""
    target = BUILD / "freeze-venv"
    shutil.rmtree(target, ignore_errors=True)
    venv.create(target, with_pip=True)
    py = target / "bin" / "python"
    run(
        py,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--find-links",
        WHEELHOUSE,
        "--only-binary",
        "hnswlib",
        wheel,
        PYINSTALLER,
    )
    return py


def freeze(py: Path) -> Path:
    work = BUILD / "freeze"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    entry = work / "edgenode_entry.py"
    entry.write_text("from edgenode.frozen import main\n\nmain()\n")
    args: list[str | Path] = [py, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN", "--onedir"]
    # Modules as plain .pyc files, not in the zlib'd PYZ archive: imports from the archive took 2-3x
    # as long as from a venv (`-m edgenode.node`: 1.1-1.8 s against 0.4-1.0 s under load), and
    # every child process (forkserver, relay) pays them again. The cache unpacks them once anyway.
    args += ["--debug", "noarchive"]
    args += ["--name", "edgenode", "--distpath", work / "dist", "--workpath", work / "work", "--specpath", work]
    # Subcommands are imported by name (edgenode.cli.LazyGroup), invisible to the import scan.
    args += ["--collect-submodules", "edgenode", "--collect-data", "edgenode", "--collect-all", "sqlite_vec"]
    for name in METADATA:
        args += ["--copy-metadata", name]
    # Not used at run time; tkinter alone is ~10 MB.
    for module in ("tkinter", "pydoc", "lib2to3", "idlelib", "ensurepip", "pip", "setuptools"):
        args += ["--exclude-module", module]
    # No --strip: see strip_debug_info.
    # cwd outside the checkout: `python -m` puts the cwd first on sys.path, and the checkout's
    # edgenode/ must not shadow the installed wheel.
    run(*args, entry, cwd=work)
    return work / "dist" / "edgenode"


def glibc_floor(onedir: Path) -> tuple[int, int]:
    """The newest GLIBC_x.y symbol version any bundled file needs: the oldest glibc it runs on."""
    newest = (2, 0)
    for path in native_files(onedir):
        out = subprocess.run(["objdump", "-T", str(path)], capture_output=True, text=True).stdout
        for major, minor in re.findall(r"GLIBC_(\d+)\.(\d+)", out):
            newest = max(newest, (int(major), int(minor)))
    return newest


def strip_debug_info(onedir: Path) -> None:
    """Drop debug sections (libpython alone carries 19 MB of them). Not from numpy and the
    libraries auditwheel/delocate repaired into `*.libs` / `.dylibs`: patchelf rewrote their
    headers, and strip then breaks them ("ELF load command address/offset not page-aligned")."""
    strip = shutil.which("strip")
    if strip is None:
        print("strip not found: debug sections are kept", flush=True)
        return
    for path in native_files(onedir):
        relative = path.relative_to(onedir).as_posix()
        if "numpy" in relative or ".libs/" in relative or ".dylibs/" in relative:
            continue
        subprocess.run([strip, "-S", str(path)], check=True)


def pack(onedir: Path) -> Path:
    """One file: launcher.sh, then a gzip'd tar of the one-dir build (gzip: every Linux and
    macOS can unpack it with no extra tool)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(onedir.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(onedir)), recursive=False)
    payload = buffer.getvalue()
    key = f"{version()}-{hashlib.sha256(payload).hexdigest()[:16]}"
    template = (Path(__file__).parent / "launcher.sh").read_text()
    template = template.replace("@VERSION@", version()).replace("@PLATFORM@", binary_name().split("-", 2)[2])
    template = template.replace("@KEY@", key)
    skip = 0
    while True:  # the header's length includes the digits of its own length
        header = template.replace("@SKIP@", str(skip)).encode()
        if len(header) == skip:
            break
        skip = len(header)
    out = DIST / binary_name()
    out.write_bytes(header + payload)
    out.chmod(0o755)
    return out


def binary() -> Path:
    hnswlib_wheel()
    wheel = edgenode_wheel()
    onedir = freeze(freeze_venv(wheel))
    strip_debug_info(onedir)
    check(onedir, baseline(), allow=runtime_dispatch())
    if sys.platform.startswith("linux"):
        floor = glibc_floor(onedir)
        print(f"glibc floor: {floor[0]}.{floor[1]}", flush=True)
        if floor > GLIBC_FLOOR:
            raise SystemExit(f"the binary needs glibc {floor[0]}.{floor[1]}, above the stated {GLIBC_FLOOR}")
    out = pack(onedir)
    size = out.stat().st_size
    print(f"{out} ({size / 2**20:.1f} MiB)")
    limit = 60 * 2**20
    if size > limit:
        raise SystemExit(f"{out.name} is {size / 2**20:.1f} MiB, over the 60 MiB budget")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=["hnswlib", "wheel", "binary", "name", "baseline"])
    target = parser.parse_args().target
    if target == "hnswlib":
        print(hnswlib_wheel())
    elif target == "wheel":
        hnswlib_wheel()
        print(edgenode_wheel())
    elif target == "binary":
        binary()
    elif target == "name":
        print(DIST / binary_name())
    else:
        print(baseline())


if __name__ == "__main__":
    main()
