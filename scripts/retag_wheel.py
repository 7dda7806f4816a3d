"""Re-tags a linux_x86_64 wheel with the manylinux tag that `auditwheel show`
finds it constrained to, without grafting anything into it: its CUDA
libraries come from JAX's nvidia wheels at run time, so auditwheel's repair
(which would copy them in) is not wanted.

    python scripts/retag_wheel.py WHEEL OUTDIR
"""

import base64
import hashlib
import pathlib
import re
import subprocess
import sys
import zipfile


def manylinux_tag(wheel: str) -> str:
    out = subprocess.run([sys.executable, "-m", "auditwheel", "show", wheel],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r'constrains the platform tag to\s+"(manylinux_\d+_\d+_x86_64)"', out)
    if not m:
        raise SystemExit(f"auditwheel gave no manylinux tag for {wheel}:\n{out}")
    return m.group(1)


def retag(wheel: str, outdir: str) -> pathlib.Path:
    tag = manylinux_tag(wheel)
    src = pathlib.Path(wheel)
    dest = pathlib.Path(outdir) / src.name.replace("-linux_x86_64.whl", f"-{tag}.whl")
    records = []
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        record_name = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        for info in zin.infolist():
            if info.filename == record_name:
                continue
            data = zin.read(info)
            if info.filename.endswith(".dist-info/WHEEL"):
                data = data.replace(b"-linux_x86_64", f"-{tag}".encode())
            zout.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{info.filename},sha256={digest},{len(data)}")
        records.append(f"{record_name},,")
        zout.writestr(record_name, "\n".join(records) + "\n")
    return dest


if __name__ == "__main__":
    print(retag(sys.argv[1], sys.argv[2]))
