"""`khotui plan --format prometheus --textfile PATH`: the metrics as a node_exporter textfile.

node_exporter's textfile collector reads every `*.prom` file of its directory
(--collector.textfile.directory) at each scrape, so a half-written file would be scraped as
garbage or a partial answer: the file is written whole and renamed into place
(khotui.host.safewrite, the receipt's rules). Run as root by khotui-check.service, into a
directory that should be root's: it must exist (node_exporter's installation makes it; khotui
does not create it), belong to root (or the caller), and be writable by nobody else, or it is
refused, since whoever can write there could make root's write land elsewhere. The file is 0644:
node_exporter usually runs as its own user and must read it.
"""

from __future__ import annotations

import os

from khotui.errors import KhotuiError
from khotui.host.safewrite import Destination, replace_file

FILE_MODE = 0o644
SUFFIX = ".prom"

DESTINATION = Destination(
    what="the textfile", option="--textfile",
    fix="make the directory root's and writable only by root (chown root: DIR; chmod 0755 "
        "DIR), as node_exporter's textfile directory usually is, or pass --textfile elsewhere",
    file_mode=FILE_MODE, dir_mode=None,
    missing_fix="create it (install -d -m 0755 DIR) and give it to node_exporter "
                "(--collector.textfile.directory=DIR), or pass --textfile elsewhere")


class TextfileError(KhotuiError):
    """The textfile could not be written (exit 2); nothing was written through a link."""


def write(path: str | os.PathLike[str], text: str) -> str:
    """Put `text` at `path` whole (module docstring); returns the path written."""
    try:
        return replace_file(path, text.encode("utf-8"), DESTINATION)
    except KhotuiError as exc:
        raise TextfileError(exc.message, path=exc.path, fix=exc.fix) from None
