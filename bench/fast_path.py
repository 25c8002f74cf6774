"""Row family 1: fast-path overhead.

Complete in-process SAML->SAML logins of a *linked* user through SATOSA's real WSGI app
built from the real ``proxy_conf/``: A = with the plugin, B = the same configuration without
the plugin's micro-services, plus a second app without them as an A/A control (its ratio to
the first shows the noise floor). All apps live in this process and are driven alternately,
one login at a time, so drift (CPU frequency, caches, other load) hits them alike.

Only the proxy's share of each login is measured: the calls into its WSGI app (the SSO
request, and the ACS post where xmlsec1 checks the IdP's signatures and signs the assertion
for the SP). The target figure is the proxy's CPU per login, its own thread plus the xmlsec1
processes it runs (``time.thread_time`` + ``RUSAGE_CHILDREN``): that is what the plugin adds
to a deployment, and unlike wall time it does not count waiting for a core, which dominates
on a shared machine. Wall time inside the proxy is reported next to it, as is the whole
login with the SP's and IdP's work. The ORCID emulator runs throughout so that any request
the fast path made would be seen (there must be none).
"""
from __future__ import annotations

import statistics

from .common import (
    ORCID_ATTRIBUTE,
    Deployment,
    InProcessLogins,
    Row,
    Summary,
    progress,
    target_row,
)

NAME = "fast_path"


def run(deployment: Deployment, *, quick: bool) -> list[Row]:
    from werkzeug.test import Client

    rounds, per_round, warmup = (4, 6, 3) if quick else (10, 27, 4)
    linked = deployment.link_demo_users()
    emulator = deployment.emulator()
    # "none2" is a second, independent app without the plugin: none/none2 is an A/A control
    # run through the same harness, i.e. the noise floor of the plugin/none ratio.
    apps = {
        "plugin": Client(deployment.wsgi_app(deployment.satosa_config(plugin=True))),
        "none": Client(deployment.wsgi_app(deployment.satosa_config(plugin=False))),
        "none2": Client(deployment.wsgi_app(deployment.satosa_config(plugin=False))),
    }
    logins = InProcessLogins(deployment.layout)

    # Warm-up, and check that each variant does what it should.
    for variant, client in apps.items():
        for _ in range(warmup):
            result = logins.login(client, "alice")
        released = logins.released(result.response)
        has_orcid = released.get(ORCID_ATTRIBUTE) == [linked["alice"]]
        if has_orcid != (variant == "plugin"):
            raise AssertionError(f"{variant}: unexpected {ORCID_ATTRIBUTE} release: {released.get(ORCID_ATTRIBUTE)}")

    emulator.requests.clear()
    samples: dict[str, dict[str, list[float]]] = {v: {"wall": [], "cpu": [], "total": []} for v in apps}
    round_ratios: list[float] = []
    pattern = ("plugin", "none", "none2", "none2", "none", "plugin")
    users = ("alice", "bob", "carol")
    for r in range(rounds):
        round_walls: dict[str, list[float]] = {v: [] for v in apps}
        for i in range(per_round):
            variant = pattern[i % len(pattern)]
            result = logins.login(apps[variant], users[(r * per_round + i) % len(users)])
            samples[variant]["wall"].append(result.proxy.wall)
            samples[variant]["cpu"].append(result.proxy.cpu)
            samples[variant]["total"].append(result.total_wall)
            round_walls[variant].append(result.proxy.wall)
        round_ratios.append(statistics.median(round_walls["plugin"]) / statistics.median(round_walls["none"]))
        progress(f"fast path: round {r + 1}/{rounds}: plugin/none proxy wall median ratio {round_ratios[-1]:.3f}")
    orcid_requests = len(emulator.requests)

    def ms(values: list[float]) -> Summary:
        return Summary.of([v * 1000 for v in values])

    wall = {v: ms(samples[v]["wall"]) for v in apps}
    cpu = {v: ms(samples[v]["cpu"]) for v in apps}
    total = {v: ms(samples[v]["total"]) for v in apps}
    n = wall["plugin"].n
    cpu_ratio = cpu["plugin"].median / cpu["none"].median
    cpu_aa = cpu["none2"].median / cpu["none"].median
    wall_ratio = wall["plugin"].median / wall["none"].median
    wall_aa = wall["none2"].median / wall["none"].median
    note = (f"proxy CPU per login (proxy thread + its xmlsec1 children): {cpu['plugin'].median:.1f} vs "
            f"{cpu['none'].median:.1f} ms; {n} logins per variant (linked users), interleaved login by login "
            f"(P N N2 N2 N P) over {rounds} rounds in one process; A/A control none2/none {cpu_aa:.3f}")
    return [
        target_row("fast_path.cpu_ratio.median", cpu_ratio, "x", "<=", 1.02, note),
        Row("fast_path.cpu_ratio.p95", cpu["plugin"].p95 / cpu["none"].p95, "x"),
        Row("fast_path.aa_cpu_ratio.median", cpu_aa, "x",
            note="A/A control: a second app without the plugin vs the first through the same harness; its "
                 "distance from 1.000 is the noise floor of the ratios above in this run"),
        Row("fast_path.proxy_cpu_ms.plugin.median", cpu["plugin"].median, "ms"),
        Row("fast_path.proxy_cpu_ms.plugin.p95", cpu["plugin"].p95, "ms"),
        Row("fast_path.proxy_cpu_ms.none.median", cpu["none"].median, "ms"),
        Row("fast_path.proxy_cpu_ms.none.p95", cpu["none"].p95, "ms"),
        Row("fast_path.wall_ratio.median", wall_ratio, "x",
            note=f"proxy wall time per login (time inside the proxy's WSGI calls): {wall['plugin'].median:.1f} vs "
                 f"{wall['none'].median:.1f} ms, p95 {wall['plugin'].p95:.1f} vs {wall['none'].p95:.1f} ms; A/A "
                 f"{wall_aa:.3f}; per-round plugin/none ratios {min(round_ratios):.3f}..{max(round_ratios):.3f}. "
                 "Wall time includes waiting for a core, so on a shared machine it is much noisier than CPU"),
        Row("fast_path.aa_wall_ratio.median", wall_aa, "x"),
        Row("fast_path.full_login_ratio.median", total["plugin"].median / total["none"].median, "x",
            note=f"SP+IdP+proxy wall per login: {total['plugin'].median:.0f} vs {total['none'].median:.0f} ms"),
        target_row("fast_path.orcid_requests", orcid_requests, "requests", "==", 0,
                   f"back-channel requests the emulator saw during all {n} plugin logins"),
    ]
