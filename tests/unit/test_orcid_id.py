from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from satosa_orcid_plugin.errors import InvalidOrcidId
from satosa_orcid_plugin.orcid_id import OrcidId, check_digit

KNOWN_VALID = ["0000-0002-1825-0097", "0000-0001-5109-3700", "0000-0002-1694-233X", "0009-0003-7578-3214"]


@pytest.mark.parametrize("value", KNOWN_VALID)
def test_known_valid_ids(value):
    assert str(OrcidId.parse(value)) == value
    assert OrcidId.parse(value).uri == f"https://orcid.org/{value}"


@pytest.mark.parametrize(
    "text",
    [
        "0000000218250097",
        "https://orcid.org/0000-0002-1825-0097",
        "http://orcid.org/0000-0002-1825-0097",
        "orcid.org/0000-0002-1825-0097",
        "https://www.orcid.org/0000-0002-1825-0097/",
        "  0000-0002-1825-0097 ",
    ],
)
def test_accepted_forms_normalise_to_one_value(text):
    assert OrcidId.parse(text) == OrcidId("0000-0002-1825-0097")


def test_lowercase_x_is_uppercased():
    assert str(OrcidId.parse("0000-0002-1694-233x")) == "0000-0002-1694-233X"


def test_sandbox_uri_keeps_its_host():
    oid = OrcidId.parse("https://sandbox.orcid.org/0000-0002-1825-0097")
    assert oid.sandbox and oid.uri == "https://sandbox.orcid.org/0000-0002-1825-0097"
    assert OrcidId.parse("0000-0002-1825-0097", sandbox=True).uri.startswith("https://sandbox.orcid.org/")


@pytest.mark.parametrize(
    "text, reason",
    [
        ("0000-0002-1825-0098", "checksum"),
        ("0000-0002-1825-009", "16 digits"),
        ("https://example.org/0000-0002-1825-0097", "orcid.org URI"),
        ("https://orcid.org.evil.com/0000-0002-1825-0097", "orcid.org URI"),
        ("0000-0002-1825-0097X", "16 digits"),
        ("", "16 digits"),
        (None, "not a string"),
    ],
)
def test_rejects_with_a_clear_reason(text, reason):
    with pytest.raises(InvalidOrcidId, match=reason):
        OrcidId.parse(text)
    assert not OrcidId.is_valid(text)


digits15 = st.text(alphabet="0123456789", min_size=15, max_size=15)


@given(digits15)
def test_every_id_with_its_check_digit_round_trips(base):
    value = f"{base[0:4]}-{base[4:8]}-{base[8:12]}-{base[12:15]}{check_digit(base)}"
    oid = OrcidId.parse(value)
    assert OrcidId.parse(oid.uri) == oid
    assert OrcidId.parse(oid.value.replace("-", "")) == oid


@given(digits15, st.sampled_from("0123456789X"))
def test_any_wrong_check_digit_is_rejected(base, last):
    if last == check_digit(base):
        return
    with pytest.raises(InvalidOrcidId):
        OrcidId.parse(base + last)


@given(st.text(max_size=80))
def test_arbitrary_text_never_crashes(text):
    try:
        OrcidId.parse(text)
    except InvalidOrcidId:
        pass
