"""Fail the build when a bundled library uses instructions beyond the CPU baseline.

Every ELF / Mach-O file under a directory is disassembled (objdump) and its instructions are
matched against what the baseline lacks: for x86-64-v2, AVX/AVX2/FMA (VEX, %ymm), BMI1/2,
MOVBE, LZCNT and AVX-512 (%zmm, mask registers); for x86-64-v3, AVX-512; for armv8-a, SVE.

Some third-party libraries carry such code on purpose and pick it at run time after asking the
CPU (`runtime_dispatch()` names them and says how). They are listed, not disassembled: their
code paths cannot be told apart by disassembly, and their projects test the dispatch.

    python .ci/release/isa_check.py DIR [BASELINE]
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

_MAGICS = (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")
_BMI = {"andn", "bextr", "blsi", "blsmsk", "blsr", "bzhi", "mulx", "pdep", "pext", "rorx", "sarx", "shlx", "shrx"}
_INSN = re.compile(r"^\s*[0-9a-f]+:\s+([a-z][a-z0-9.]*)\s*(.*)$")


def runtime_dispatch() -> dict[str, str]:
    """Path patterns (regex, below the bundle root) of the libraries a full scan of the linux
    x86_64 build found with beyond-v2 instructions, each of which picks such code only after
    asking the CPU. Everything else must scan clean (apsw, libsqlite3, vec0, hnswlib, libpython,
    msgspec, uvloop, httptools ... do)."""
    return {
        r"(^|/)libcrypto[^/]*\.so|(^|/)libssl[^/]*\.so|cryptography/hazmat/bindings/_rust": (
            "OpenSSL: every AVX/AVX2/AVX-512 path is taken only when OPENSSL_ia32cap (CPUID) says so"
        ),
        r"libsql/libsql\.": "the ring crate (rustls) inside it: BoringSSL-style CPUID dispatch (OPENSSL_ia32cap_P)",
        r"numpy/_core/_multiarray_umath": "numpy's CPU dispatcher: AVX2/AVX-512 kernels only after CPUID",
        r"numpy\.libs/lib(scipy_)?openblas": "OpenBLAS DYNAMIC_ARCH: the kernel set is chosen per CPU at load time",
        r"numpy\.libs/libgfortran": "libgfortran's matmul: AVX/AVX2/AVX-512 variants chosen by CPUID at run time",
    }


def _findings(line_iter: list[str], baseline: str) -> Counter[str]:
    found: Counter[str] = Counter()
    arm = baseline.startswith("armv")
    for line in line_iter:
        match = _INSN.match(line)
        if not match:
            continue
        mnemonic, operands = match.groups()
        if arm:
            if re.search(r"\bz\d+\.[bhsdq]\b|\bp\d+/[mz]\b", operands):
                found["sve"] += 1
            continue
        if "%zmm" in operands or re.search(r"%k[0-7]\b", operands) or "{1to" in operands:
            found["avx512"] += 1
        elif baseline == "x86-64-v2":
            if "%ymm" in operands:
                found["avx/avx2 (ymm)"] += 1
            elif mnemonic.startswith("v") and "%xmm" in operands:
                found["avx (vex xmm)"] += 1
            elif mnemonic in _BMI:
                found["bmi1/bmi2"] += 1
            elif mnemonic in ("movbe", "lzcnt") or mnemonic.startswith("vfmadd"):
                found[mnemonic] += 1
    return found


def scan(path: Path, baseline: str) -> Counter[str]:
    objdump = shutil.which("objdump") or shutil.which("llvm-objdump")
    if objdump is None:
        raise SystemExit("objdump is needed for the instruction check (binutils, or Xcode's command line tools)")
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(path)], capture_output=True, text=True, check=True)
    return _findings(out.stdout.splitlines(), baseline)


def native_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as f:
                if f.read(4) in _MAGICS:
                    files.append(path)
    return files


def check(root: Path, baseline: str, allow: dict[str, str]) -> None:
    """Raise SystemExit listing every file with beyond-baseline instructions that is not allowed."""
    bad: list[str] = []
    for path in native_files(root):
        relative = path.relative_to(root).as_posix()
        reason = next((why for pattern, why in allow.items() if re.search(pattern, relative)), None)
        if reason is not None:
            print(f"  isa {baseline}: {relative}: not scanned, {reason}")
            continue
        found = scan(path, baseline)
        if found:
            bad.append(f"{relative}: {dict(found)}")
        print(f"  isa {baseline}: {relative}: {dict(found) or 'ok'}", flush=True)
    if bad:
        raise SystemExit(f"instructions beyond {baseline} in bundled code:\n  " + "\n  ".join(bad))


if __name__ == "__main__":
    check(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "x86-64-v2", allow={})
