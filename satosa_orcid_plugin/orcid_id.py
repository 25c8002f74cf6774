"""The ORCID iD value type.

>>> OrcidId.parse("https://orcid.org/0000-0002-1825-0097").uri
'https://orcid.org/0000-0002-1825-0097'
>>> str(OrcidId.parse("000000021694233x"))
'0000-0002-1694-233X'
>>> OrcidId.parse("0000-0002-1825-0098")
Traceback (most recent call last):
...
satosa_orcid_plugin.errors.InvalidOrcidId: '0000-0002-1825-0098' is not a valid ORCID iD: checksum digit is 8, expected 7

The check digit is ISO/IEC 7064:2003 MOD 11-2, as ORCID-Source's ``OrcidCheckDigitGenerator``
computes it ("Structure of the ORCID Identifier",
https://support.orcid.org/hc/en-us/articles/360006897674-Structure-of-the-ORCID-Identifier).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidOrcidId

PRODUCTION_HOST = "orcid.org"
SANDBOX_HOST = "sandbox.orcid.org"
_HOSTS = {PRODUCTION_HOST: False, "www.orcid.org": False, SANDBOX_HOST: True, "www.sandbox.orcid.org": True}
_URI = re.compile(r"^(?:https?://)?(?P<host>(?:www\.)?(?:sandbox\.)?orcid\.org)/(?P<id>[^/?#]+)/?$", re.I)
_BARE = re.compile(r"^(\d{4})-?(\d{4})-?(\d{4})-?(\d{3}[\dX])$", re.I)


def check_digit(base15: str) -> str:
    """ISO 7064 MOD 11-2 check character for the first 15 digits."""
    total = 0
    for ch in base15:
        total = (total + int(ch)) * 2
    result = (12 - total % 11) % 11
    return "X" if result == 10 else str(result)


@dataclass(frozen=True, slots=True)
class OrcidId:
    """A checksum-valid ORCID iD, kept in the 16-character hyphenated form."""

    value: str
    sandbox: bool = False

    @classmethod
    def parse(cls, text: object, *, sandbox: bool | None = None) -> "OrcidId":
        """Accept bare, hyphen-less, ``orcid.org/…`` and ``http(s)://`` (sandbox too)."""
        if not isinstance(text, str):
            raise InvalidOrcidId(f"{text!r} is not a valid ORCID iD: not a string")
        raw = text.strip()
        shown = raw if len(raw) <= 60 else raw[:57] + "..."
        is_sandbox = False
        m = _URI.match(raw)
        if m:
            is_sandbox = _HOSTS[m.group("host").lower()]
            candidate = m.group("id")
        elif "/" in raw or ":" in raw:
            raise InvalidOrcidId(f"{shown!r} is not a valid ORCID iD: not an orcid.org URI")
        else:
            candidate = raw
        b = _BARE.match(candidate)
        if not b:
            raise InvalidOrcidId(f"{shown!r} is not a valid ORCID iD: expected 16 digits as XXXX-XXXX-XXXX-XXXX")
        digits = "".join(b.groups()).upper()
        expected = check_digit(digits[:15])
        if digits[15] != expected:
            raise InvalidOrcidId(
                f"{shown!r} is not a valid ORCID iD: checksum digit is {digits[15]}, expected {expected}"
            )
        if sandbox is not None:
            is_sandbox = sandbox
        return cls("-".join(digits[i : i + 4] for i in range(0, 16, 4)), is_sandbox)

    @classmethod
    def is_valid(cls, text: object) -> bool:
        try:
            cls.parse(text)
        except InvalidOrcidId:
            return False
        return True

    @property
    def host(self) -> str:
        return SANDBOX_HOST if self.sandbox else PRODUCTION_HOST

    @property
    def uri(self) -> str:
        """The ORCID-preferred https URI, the form eduPersonOrcid requires."""
        return f"https://{self.host}/{self.value}"

    def __str__(self) -> str:
        return self.value
