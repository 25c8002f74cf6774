"""Fixtures for whole-flow tests; they live in ``flowkit.py`` so that test modules import the
helpers by a name no other conftest shares (``from flowkit import ...``)."""
from flowkit import *  # noqa: F401,F403  (fixtures are registered from this namespace)
from flowkit import _demo_keys, _form_fields_fixture, _login_memory, _sp_receive_fixture  # noqa: F401
