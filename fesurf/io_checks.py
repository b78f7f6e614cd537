"""Reading user files with errors that name the file (and the line): text, structures.

Every public reader of fesurf goes through these, so a binary file where text is expected, an
undecodable byte, or a structure file ASE cannot parse becomes an :class:`~fesurf.errors.InputError`
that says which file, which line and what to do, never a ``UnicodeDecodeError`` or a parser traceback.

Example
-------
>>> import tempfile, os
>>> p = os.path.join(tempfile.mkdtemp(), "bad.xyz")
>>> _ = open(p, "w").write("2\\ncomment\\nH 0 0 0\\nH 0 zero 0\\n")
>>> try:
...     read_structures(p)
... except InputError as e:
...     "line 4" in str(e)
True
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError

__all__ = ["read_text", "read_structures", "check_text_file"]

#: formats whose files are text (checked for binary content before parsing)
_TEXT_FORMATS = {"xyz", "extxyz", "pdb", "proteindatabank", "cif", "vasp", "gen", "xsf", "mol", "sdf", "gaussian-in",
                 "espresso-in", "lammps-data", "cfg", "res", "json"}


def check_text_file(path, what: str = "file") -> Path:
    """``path`` as a Path after checking that it exists and holds UTF-8 text (InputError otherwise)."""
    path = Path(os.fspath(path))
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, not a file")
    read_text(path, what)
    return path


def read_text(path, what: str = "file") -> str:
    """The text of ``path`` (UTF-8); a binary or undecodable file is an InputError naming it and the line."""
    path = Path(os.fspath(path))
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    data = path.read_bytes()
    for magic, module in ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ", "lzma")):
        if data.startswith(magic):  # compressed text (ASE reads .gz/.bz2/.xz transparently)
            import importlib

            try:
                data = importlib.import_module(module).decompress(data)
            except Exception as exc:  # noqa: BLE001 - any decompression error: a damaged archive
                raise InputError(f"{what} {path} is a damaged {module} archive ({exc})") from None
            break
    if b"\x00" in data[:65536]:
        raise InputError(f"{what} {path} is binary (it contains NUL bytes), not a text file; check the file name")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{what} {path} is not UTF-8 text: undecodable byte 0x{data[exc.start]:02x} on line {line} "
                         "(a binary file, or text in another encoding: re-save it as UTF-8)") from None


def _xyz_bad_line(text: str):
    """``(line_number, reason)`` of the first malformed line of an (ext)xyz text, or None."""
    lines = text.splitlines()
    k = 0
    while k < len(lines):
        if not lines[k].strip():
            k += 1
            continue
        try:
            n = int(lines[k].split()[0])
        except (ValueError, IndexError):
            return k + 1, f"expected the atom count of a frame, found {lines[k][:60]!r}"
        if n < 0:
            return k + 1, f"negative atom count {n}"
        if k + 2 + n > len(lines):
            return len(lines), f"the frame on line {k + 1} declares {n} atoms but the file ends first"
        for m in range(k + 2, k + 2 + n):
            parts = lines[m].split()
            try:
                if len(parts) < 4:
                    raise ValueError
                [float(v) for v in parts[1:4]]
            except ValueError:
                return m + 1, f"expected 'symbol x y z', found {lines[m][:60]!r}"
        k += 2 + n
    return None


def read_structures(path, index=":", format: str | None = None, what: str = "structure file"):
    """``ase.io.read(path, index, format)`` with errors that name the file and, for text formats, the line.

    Returns a list of Atoms for a slice ``index`` (the default, ``":"``), one Atoms for an int.
    """
    import ase.io

    path = Path(os.fspath(path))
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    fmt = format
    if fmt is None:
        try:
            from ase.io.formats import filetype

            fmt = filetype(str(path), guess=True)
        except Exception:  # noqa: BLE001 - ASE raises several kinds for unrecognised files
            fmt = None
    text = read_text(path, what) if fmt in _TEXT_FORMATS or fmt is None else None
    try:
        out = ase.io.read(str(path), index=index, format=format)
    except Exception as exc:  # noqa: BLE001 - ASE's parsers raise anything from ValueError to IndexError
        where = ""
        if text is not None and fmt in ("xyz", "extxyz", None):
            bad = _xyz_bad_line(text)
            if bad is not None:
                where = f" line {bad[0]}: {bad[1]};"
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{what} {path} could not be read as {fmt or 'a structure'}:{where} ({reason}). "
                         "Check the file, or name its format") from None
    frames = out if isinstance(out, list) else [out]
    if not frames:
        raise InputError(f"{what} {path} holds no structures")
    return out
