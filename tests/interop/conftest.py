"""Fixtures of the foreign-client tests (python3-saml, Shibboleth SP, Authlib); they live in
``interopkit.py`` so that test modules import the helpers by a name no other conftest shares."""
from interopkit import interop  # noqa: F401  (the session fixture)
