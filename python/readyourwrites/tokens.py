"""Tokens: "<timeline>:<lsn>" positions in the WAL, as the extension writes them."""
from typing import Dict, NamedTuple, Optional

__all__ = ["Token", "parse_token", "format_tokens", "parse_tokens"]


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


def format_tokens(tokens: Dict[str, Token], first: str) -> str:
    """Tokens of several clusters as one string: "1:0/3A8,orders=1:0/12"
    -- first's (the default cluster's, conf.Config.default) bare (so a one-cluster value is its token),
    every other one named."""
    return ",".join(str(tokens[n]) if n == first else "%s=%s" % (n, tokens[n])
                    for n in sorted(tokens, key=lambda n: (n != first, n)))


def parse_tokens(text: Optional[str], first: str) -> Dict[str, Token]:
    """The inverse of format_tokens(); malformed items are left out."""
    found: Dict[str, Token] = {}
    for item in (text or "").split(","):
        name, _, value = item.rpartition("=")
        token = parse_token(value)
        if token is not None:
            found[name or first] = token
    return found
