"""The examples in the docstrings are true."""
import doctest

import pytest

from satosa_orcid_plugin import orcid_id, tokens
from satosa_orcid_plugin.devstack import emulator, scripted_browser
from satosa_orcid_plugin import cli_init
from satosa_orcid_plugin.ops import discovery, pairwise, saml2_frontend


@pytest.mark.parametrize("module", [orcid_id, tokens, scripted_browser, emulator, discovery, pairwise, saml2_frontend, cli_init])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
