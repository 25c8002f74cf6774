"""The plugin's benchmark: ``python -m bench [--quick] [--only NAME]`` (``make bench``).

One module per row family, each with ``NAME`` and ``run(...) -> list[Row]``:

* ``fast_path``  - linked user's login, plugin vs the same proxy_conf without it (in-process)
* ``hop_cost``   - the plugin's own CPU per consent hop and its back-channel requests
* ``store_scale``- link store lookups and writes at 10k/100k/1M links, SQLite and PostgreSQL
* ``throughput`` - logins/s under gunicorn with vs without the plugin, peak RSS per worker
* ``pacing``     - two affiliation workers against the emulator's 24 req/s member API limit

Results go to ``bench/results/latest.json`` and ``latest.md``; see ``bench/README.md``.
"""
