"""Copying a finished file into a directory the user chose, safely.

The target directory is the user's, and may be shared (``/tmp``, a synced or
group folder): anyone who can write there can plant a symbolic link at a name
we are about to open.  A fixed temporary name (``.photo.png.part``) opened
with ``open()`` follows such a link and overwrites whatever it points to.  So
a copy here is written only to a temporary file that this call creates itself,
exclusively, under a random name (``O_CREAT | O_EXCL | O_NOFOLLOW``: a link or
any file at the name makes the creation fail, never be followed), in the
target directory, and then renamed onto the final name.  A rename replaces a
link at the final name by the file itself and never writes through it, and a
reader never sees a half-copied file.

The final names come partly from servers (a process's original file name), so
they are shortened to what the directory's file system allows: counted in
bytes of the encoded name (``os.fsencode``), not in characters, with the
extension kept whole and never a character cut in half.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from pathlib import Path

__all__ = ["NAME_MAX", "copy_into", "fit_name", "name_max"]

NAME_MAX = 255
"""The longest file name, in bytes, where the file system does not say
(ext4, XFS, Btrfs, APFS and NTFS all allow 255)."""

_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
          | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS,
                  getattr(errno, "ENOTSUP", errno.EPERM), getattr(errno, "EOPNOTSUPP", errno.EPERM)}
_CHUNK = 1 << 20


def name_max(directory: str | os.PathLike[str]) -> int:
    """The longest file name ``directory``'s file system takes, in bytes."""
    try:
        limit = os.pathconf(directory, "PC_NAME_MAX")
    except (AttributeError, ValueError, OSError):  # no pathconf (Windows), or no answer
        return NAME_MAX
    return limit if limit > 0 else NAME_MAX


def fit_name(stem: str, ext: str, limit: int = NAME_MAX) -> str:
    """``stem + ext`` in at most ``limit`` bytes: the stem cut, the extension whole.

    Counted on the encoded name (``os.fsencode``), so 200 characters of
    accented text (400 bytes in UTF-8) fit a 255-byte limit; the cut falls
    between characters, never inside one.  Characters the file system's
    encoding cannot hold are left out.
    """
    used = len(_encoded(ext))
    if used >= limit:  # an extension longer than any name: keep what fits of the whole
        stem, ext, used = stem + ext, "", 0
    kept: list[str] = []
    for ch in stem:
        size = len(_encoded(ch))
        if used + size > limit:
            break
        if size:
            kept.append(ch)
            used += size
    cut = "".join(kept)
    if len(cut) < len(stem):
        cut = cut.rstrip() or cut  # never end a shortened stem on a space before the dot
    return cut + ext


def _encoded(text: str) -> bytes:
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:
        return b"".join(_encoded(ch) for ch in text) if len(text) > 1 else b""


def copy_into(source: str | os.PathLike[str], directory: str | os.PathLike[str], stem: str,
              ext: str, *, replace: bool) -> Path:
    """Copy ``source`` into ``directory`` as ``stem + ext`` (shortened to fit); the new path.

    ``directory`` must exist.  With ``replace``, a file already at the final
    name is replaced (a link there is replaced itself, never followed; a
    directory there is an error).  Without, a taken name, by anything at all
    (a file, a directory, a dangling link), gets ``-2``, ``-3``… before the
    extension, chosen by an exclusive hard link so that two copies at once
    never take the same name.  On any error, the temporary file is removed
    and the error raised as it is (an ``OSError``).  ``stem + ext`` must be a
    plain name, never a path: a separator in it is a ``ValueError``.
    """
    name = stem + ext
    if name in ("", ".", "..") or any(sep and sep in name for sep in (os.sep, os.altsep)):
        raise ValueError(f"not a file name of its own: {name!r}")
    folder = Path(directory)
    limit = name_max(folder)
    fd, temp = _create_temp(folder)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            _sync(out.fileno())
        if replace:
            final = folder / fit_name(stem, ext, limit)
            os.replace(temp, final)
            return final
        return _take_free_name(temp, folder, stem, ext, limit)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _sync(fd: int) -> None:
    """Flush the copy to disk before it takes its name, so that a crash never
    leaves an empty or short file under the final name."""
    try:
        os.fsync(fd)
    except OSError as exc:  # a file system that cannot sync (some FUSE mounts): go on
        if exc.errno not in (errno.EINVAL, getattr(errno, "ENOTSUP", errno.EINVAL)):
            raise


def _create_temp(folder: Path) -> tuple[int, Path]:
    """A new, empty, hidden file in ``folder``, made by this call and no one else.

    Like ``tempfile.mkstemp``, but with the usual permissions (0666 less the
    umask) rather than 0600, so that the saved file reads like any other the
    user makes.
    """
    for _ in range(100):
        temp = folder / f".topaz-nb-{_token()}.part"
        try:
            return os.open(temp, _FLAGS, 0o666), temp
        except FileExistsError:  # taken, by a file or a link: another random name
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(folder))


def _token() -> str:
    return secrets.token_hex(8)


def _take_free_name(temp: Path, folder: Path, stem: str, ext: str, limit: int) -> Path:
    """Give ``temp`` the first free one of ``stem+ext``, ``stem-2+ext``…; never overwrite.

    A hard link fails when anything is at the name, so checking and taking a
    name are one step.  Where the file system has no hard links (FAT, some
    network shares) the name is reserved by creating it exclusively, and the
    copy renamed onto the reservation.
    """
    links = True
    n = 1
    while True:
        final = folder / fit_name(stem, ext if n == 1 else f"-{n}{ext}", limit)
        n += 1
        if links:
            try:
                os.link(temp, final)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                links = False
            else:
                temp.unlink()
                return final
        try:
            os.close(os.open(final, _FLAGS, 0o666))
        except FileExistsError:
            continue
        try:
            os.replace(temp, final)
        except BaseException:
            final.unlink(missing_ok=True)
            raise
        return final
