"""``latest.svg``: two charts drawn from the rows of a run, as plain SVG (no plotting library).

Left: the store's lookup latency (p99 and median, wall clock) against the number of links, on
SQLite and PostgreSQL, with the target. Right: the proxy's CPU per login by part (xmlsec1,
SATOSA's state cookie, the plugin, the rest of SATOSA/pysaml2), for a fast-path login and for
logins with a hop. A figure a run did not measure is left out, and the chart says so.
"""
from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

SCALES = (("10k", 10_000), ("100k", 100_000), ("1m", 1_000_000))
DATABASES = (("sqlite", "SQLite", "#1f77b4"), ("postgresql", "PostgreSQL", "#d62728"))
PARTS = (("xmlsec1", "xmlsec1 (SAML signatures)", "#9aa5b1"), ("state_cookie", "SATOSA state cookie", "#f2b134"),
         ("plugin", "plugin", "#2ca02c"), ("rest", "rest of SATOSA, pysaml2", "#c7d0d9"))
LOGINS = (("fast", "fast path (linked)"), ("hop", "hop, interstitial"), ("hop_direct", "hop, no interstitial"))
W, H = 960, 400


def _figures(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {r["name"]: r["figure"] for r in rows if isinstance(r.get("figure"), (int, float))}


def _text(x: float, y: float, s: str, *, size: int = 12, anchor: str = "start", weight: str = "normal",
          fill: str = "#222") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" font-weight="{weight}" '
            f'fill="{fill}">{escape(s)}</text>')


def _lookup_panel(fig: dict[str, float], x0: float, y0: float, w: float, h: float, target: float) -> list[str]:
    out = [_text(x0, y0 - 14, "Store lookup (get_active), ms, wall clock, log", size=14,
                 weight="bold")]
    values = [fig.get(f"store.{db}.{s}.lookup_ms.{q}") for db, _, _ in DATABASES for s, _ in SCALES
              for q in ("p99", "median")]
    # log scale: medians of a tenth of a millisecond and p99s of a loaded machine on one chart
    lo = 0.05
    hi = 10 ** math.ceil(math.log10(max([v for v in values if v] + [target * 2])))
    plot_x, plot_w, plot_h = x0 + 44, w - 60, h - 60

    def px(i: int) -> float:
        return plot_x + plot_w * (i + 0.5) / len(SCALES)

    def py(v: float) -> float:
        v = min(max(v, lo), hi)
        return y0 + plot_h - plot_h * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    ticks = [0.1 * 10 ** k for k in range(round(math.log10(hi / 0.1)) + 1)]
    for v in ticks:
        out.append(f'<line x1="{plot_x}" y1="{py(v):.1f}" x2="{plot_x + plot_w}" y2="{py(v):.1f}" stroke="#eee"/>')
        out.append(_text(plot_x - 6, py(v) + 4, f"{v:g}", size=11, anchor="end"))
    out.append(f'<line x1="{plot_x}" y1="{py(target):.1f}" x2="{plot_x + plot_w}" y2="{py(target):.1f}" '
               f'stroke="#555" stroke-dasharray="6 4"/>')
    out.append(_text(plot_x + plot_w, py(target) - 4, f"target p99 {target:g} ms", size=11, anchor="end",
                     fill="#555"))
    for i, (label, n) in enumerate(SCALES):
        out.append(_text(px(i), y0 + plot_h + 16, f"{n:,} links", size=11, anchor="middle"))
    missing = []
    for j, (db, name, color) in enumerate(DATABASES):
        for q, dash in (("p99", ""), ("median", ' stroke-dasharray="3 3"')):
            points = [(px(i), py(fig[k])) for i, (s, _) in enumerate(SCALES)
                      if (k := f"store.{db}.{s}.lookup_ms.{q}") in fig]
            if not points:
                if q == "p99":
                    missing.append(name)
                continue
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
            for x, y in points:
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
        ly = y0 + plot_h + 34 + 16 * j
        out.append(f'<line x1="{plot_x}" y1="{ly - 4}" x2="{plot_x + 24}" y2="{ly - 4}" stroke="{color}" '
                   f'stroke-width="2"/>')
        out.append(_text(plot_x + 30, ly, f"{name}: p99 (solid), median (dotted)"
                         + (" — not measured in this run" if name in missing else ""), size=11))
    return out


def _cpu_panel(fig: dict[str, float], x0: float, y0: float, w: float, h: float) -> list[str]:
    out = [_text(x0, y0 - 14, "Proxy CPU per login, by part (medians)", size=14, weight="bold")]
    totals = [fig.get(f"login.cpu_ms.{name}.total") for name, _ in LOGINS]
    if not any(totals):
        return out + [_text(x0, y0 + 30, "not measured in this run (the hop family did not run)", size=12)]
    top = max(t for t in totals if t)
    label_w, bar_h, gap = 130, 34, 22
    plot_w = w - label_w - 60
    for i, (name, label) in enumerate(LOGINS):
        y = y0 + 10 + i * (bar_h + gap)
        out.append(_text(x0 + label_w - 8, y + bar_h / 2 + 4, label, size=12, anchor="end"))
        total = fig.get(f"login.cpu_ms.{name}.total")
        if not total:
            out.append(_text(x0 + label_w, y + bar_h / 2 + 4, "not measured", size=11))
            continue
        x = x0 + label_w
        for part, _, color in PARTS:
            v = max(0.0, fig.get(f"login.cpu_ms.{name}.{part}", 0.0))
            width = plot_w * v / top
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{bar_h}" fill="{color}">'
                       f'<title>{escape(part)}: {v:.1f} ms</title></rect>')
            if width > 34:
                out.append(_text(x + width / 2, y + bar_h / 2 + 4, f"{v:.0f}", size=11, anchor="middle"))
            x += width
        out.append(_text(x + 6, y + bar_h / 2 + 4, f"{total:.0f} ms", size=12, weight="bold"))
    fast = fig.get("login.cpu_ms.fast.total")
    ratio = fig.get("login.proxy_cpu.hop_vs_fast")
    ly = y0 + 10 + len(LOGINS) * (bar_h + gap)
    for k, (_, name, color) in enumerate(PARTS):
        lx = x0 + label_w + (k % 2) * 200
        yy = ly + (k // 2) * 18
        out.append(f'<rect x="{lx}" y="{yy - 10}" width="12" height="12" fill="{color}"/>')
        out.append(_text(lx + 18, yy, name, size=11))
    if fast and ratio:
        out.append(_text(x0 + label_w, ly + 44, f"hop login / fast-path login: {ratio:.2f}x (target <= 1.10)",
                         size=11))
    return out


def write(path: Path, rows: list[dict[str, Any]], *, subtitle: str, lookup_target: float = 0.5) -> Path:
    fig = _figures(rows)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        'font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
        f'<rect width="{W}" height="{H}" fill="#fff"/>',
        _text(16, 22, "satosa-orcid: make bench", size=15, weight="bold"),
        _text(16, 40, subtitle, size=11, fill="#555"),
    ]
    parts += _lookup_panel(fig, 16, 90, 420, 260, lookup_target)
    parts += _cpu_panel(fig, 470, 90, 480, 260)
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")
    return path
