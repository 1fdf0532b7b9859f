"""Tokens: "<timeline>:<lsn>" positions in the WAL, as the extension writes them."""
from typing import NamedTuple, Optional

__all__ = ["Token", "parse_token"]


class Token(NamedTuple):
    """A WAL position on a timeline.  Ordered only within one timeline."""

    timeline: int
    lsn: int

    def __str__(self) -> str:
        return "%d:%X/%X" % (self.timeline, self.lsn >> 32, self.lsn & 0xFFFFFFFF)

    def covers(self, other: "Token") -> bool:
        """True when a server known to be at self has replayed other.

        Across timelines the answer needs the server's history, which only
        the server has: say no, and let the caller ask it.
        """
        return self.timeline == other.timeline and self.lsn >= other.lsn


def parse_token(text: Optional[str]) -> Optional[Token]:
    """Parse "<tli>:<hi>/<lo>"; None for None, '' or anything malformed."""
    if not text:
        return None
    try:
        tli, _, lsn = text.partition(":")
        hi, _, lo = lsn.partition("/")
        token = Token(int(tli, 10), (int(hi, 16) << 32) | int(lo, 16))
    except ValueError:
        return None
    if token.timeline <= 0:
        return None
    return token
