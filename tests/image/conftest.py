"""The built image, started for real (``make image-test``; ``.ci/run`` runs it after ``make test``).

Needs ``$SATOSA_ORCID_IMAGE`` (the image to test, e.g. ``satosa-orcid:local``), a Docker daemon
(``$DOCKER_HOST``; containers use ``--network host`` and reach loopback services),
PostgreSQL (``$SATOSA_ORCID_TEST_POSTGRES_URL``; each test module creates its own database and
drops it), ``docker-compose`` and ``nginx``. Without ``$SATOSA_ORCID_IMAGE`` nothing here is
collected, so ``make test`` never needs Docker.
"""
from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("SATOSA_ORCID_IMAGE") else ["test_*.py"]
