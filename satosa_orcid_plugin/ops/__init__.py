"""Operations entry points: what runs *around* the micro-service rather than in it.

* :mod:`.wsgi` - the WSGI app the image serves (SATOSA's app behind :mod:`.guard`)
* :mod:`.gunicorn_conf` - gunicorn settings of the image
* :mod:`.health` - the ``<name>/health`` endpoint
* :mod:`.checks` - ``satosa-orcid check-config``
* :mod:`.cookie_size` - the SATOSA state cookie estimate and its warnings
* :mod:`.discovery` - the plugin's entries in a proxy_conf.yaml or a micro-service YAML
* :mod:`.signals` - SIGTERM/SIGINT as a stop event for long-running commands
* :mod:`.saml2_backend` - SATOSA's SAML backend with its InResponseTo check in the state cookie
* :mod:`.saml2_frontend` - SATOSA's SAML frontend with federation metadata (signed, from the environment)
* :mod:`.pairwise` - per-SP persistent NameIDs (a response micro-service)

Apart from ``microservice.py`` and ``errors.py``, only this package imports ``satosa``.
Importing the package itself loads nothing.
"""
