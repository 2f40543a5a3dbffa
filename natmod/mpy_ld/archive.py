"""Read a GNU `ar` archive (libgcc.a): which member defines a symbol, and the member's bytes.

Format: "!<arch>\\n", then members, each a 60-byte header (name, ..., decimal size, "`\\n")
and its data padded to an even length. Member "/" is the symbol index: a big-endian count, that
many big-endian header offsets, then as many NUL-terminated symbol names. Member "//" holds
long names, which a header refers to as "/<offset>".
"""

import struct

MAGIC = b"!<arch>\n"


class Archive:
    def __init__(self, path):
        self.path = str(path)
        with open(path, "rb") as f:
            data = f.read()
        if not data.startswith(MAGIC):
            raise ValueError("%s: not an ar archive" % path)
        self._members = {}  # header offset -> (name, bytes)
        self._definer = {}  # symbol -> header offset
        long_names = b""
        pos = len(MAGIC)
        while pos + 60 <= len(data):
            header = data[pos:pos + 60]
            name = header[:16].decode().rstrip()
            size = int(header[48:58])
            body = data[pos + 60:pos + 60 + size]
            if name == "/":
                self._read_index(body)
            elif name == "//":
                long_names = body
            else:
                if name.startswith("/"):
                    start = int(name[1:])
                    name = long_names[start:long_names.index(b"/\n", start)].decode()
                self._members[pos] = (name.rstrip("/"), body)
            pos += 60 + size + (size & 1)

    def _read_index(self, body):
        (count,) = struct.unpack_from(">I", body)
        offsets = struct.unpack_from(">%dI" % count, body, 4)
        names = body[4 + 4 * count:].split(b"\0")
        for sym, offset in zip(names, offsets):
            self._definer.setdefault(sym.decode(), offset)

    def member_defining(self, symbol):
        """(member name, member bytes) of the object that defines `symbol`, or None."""
        offset = self._definer.get(symbol)
        return None if offset is None else self._members[offset]
