"""Fixtures and hooks of the ops tests; they live in ``opskit.py`` so that test modules import
the helpers by a name no other conftest shares (``from opskit import ...``)."""
from opskit import *  # noqa: F401,F403  (fixtures and pytest hooks are registered from this namespace)
