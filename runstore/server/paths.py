"""The server's checks of client-supplied names and paths: runstore.rules, nothing else.

The server has no rules of its own (a run the SDK accepted must sync): this module only names
the rules' error BadPath for the server code that catches it. A segment (user, folder, run or
artifact name) must match rules.SEGMENT_RE, which refuses '.', '..', separators, NUL, percent
signs, backslashes and look-alikes such as full-width dots. Artifact object paths never become
file names on the server (blobs are named by their verified sha256), but they are checked too
so that a download cannot write outside its directory.
"""

from __future__ import annotations

from runstore.errors import InvalidInputError as BadPath
from runstore.rules import (
    MAX_DEPTH,
    MAX_OBJECT_PATH,
    SEGMENT_RE,
    SHA256_RE,
    USER_RE,
    UUID_RE,
    check_object_path,
    check_segment,
    check_sha256,
    check_user,
    check_uuid,
    split_path,
)

__all__ = ["BadPath", "MAX_DEPTH", "MAX_OBJECT_PATH", "SEGMENT_RE", "SHA256_RE", "USER_RE",
           "UUID_RE", "check_object_path", "check_segment", "check_sha256", "check_user",
           "check_uuid", "split_path"]
