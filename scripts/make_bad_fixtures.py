"""Hostile TorchScript archives for the pre-check that runs before libtorch (issue 16).

Writes models/bad/ts_*.pt: a small scripted module whose zip is re-written (CRC valid,
deflated so that the files stay a few KB) with one hostile entry each. libtorch's own
loader overflows its stack or allocates gigabytes on these; weightmap must refuse them
with an error naming the file and the entry.

    .venv/bin/python scripts/make_bad_fixtures.py
"""
import io
import pathlib
import struct
import zipfile

import torch

BAD = pathlib.Path(__file__).resolve().parent.parent / "models" / "bad"


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x) + 1


def base_archive():
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Tiny()), buf)
    return buf.getvalue()


def rewrite(raw, dst, edit):
    """Copies the archive `raw`, `edit(name, data)` giving each entry's new bytes."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info.filename))
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zout.writestr(fixed, data, compress_type=zipfile.ZIP_DEFLATED)


def main():
    BAD.mkdir(parents=True, exist_ok=True)
    raw = base_archive()
    z = zipfile.ZipFile(io.BytesIO(raw))
    code = next(n for n in z.namelist() if n.endswith(".py") and b"class Tiny" in z.read(n))

    # 100,000 nested parentheses in the module's forward.
    deep = "(" * 100_000 + "x" + ")" * 100_000

    def deep_code(name, data):
        if name != code:
            return data
        text = data.decode()
        return text.replace("return ", f"_deep = {deep}\n    return ", 1).encode()

    rewrite(raw, BAD / "ts_deep_code.pt", deep_code)

    # constants.pkl: a list nested 1,000,000 deep (EMPTY_LIST x N, APPEND x N-1).
    n = 1_000_000
    nested = b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b"."
    rewrite(raw, BAD / "ts_deep_constants.pt",
            lambda name, data: nested if name.endswith("/constants.pkl") else data)

    # Every debug file: the same million-deep list. libtorch would unpickle it, but weightmap
    # loads archives without their debug files, so this archive reads, loads and traces.
    rewrite(raw, BAD / "ts_deep_debug_pkl.pt",
            lambda name, data: nested if name.endswith(".debug_pkl") else data)

    # data.pkl: a BINUNICODE string declaring 0xffffffff bytes.
    huge = b"\x80\x02X" + struct.pack("<I", 0xFFFFFFFF) + b"abc."
    rewrite(raw, BAD / "ts_huge_string.pt",
            lambda name, data: huge if name.endswith("/data.pkl") else data)

    for f in sorted(BAD.glob("ts_*.pt")):
        print(f.name, f.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
