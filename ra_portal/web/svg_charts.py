"""Small server-rendered SVG charts (bar and line) for the report pages: no JavaScript, no CDN."""
from __future__ import annotations

from xml.sax.saxutils import escape

from markupsafe import Markup

PALETTE = ("#1f6f43", "#b8860b", "#a23b3b", "#2d5f9a", "#6b4c9a")


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _axis(width: int, height: int, left: int, bottom: int, top: int, peak: float) -> list[str]:
    parts = [f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#444"/>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 8}" y2="{height - bottom}" '
             'stroke="#444"/>']
    for i in range(5):
        value = peak * i / 4
        y = height - bottom - (height - bottom - top) * i / 4
        label = _num(value) if peak < 10 else str(round(value))
        parts.append(f'<text x="{left - 4}" y="{_num(y + 4)}" text-anchor="end" '
                     f'font-size="10">{label}</text>')
    return parts


def _frame(width: int, height: int, title: str, body: list[str]) -> Markup:
    t = escape(title)
    return Markup(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                  f'viewBox="0 0 {width} {height}" role="img" aria-label="{t}">'
                  f'<title>{t}</title>' + "".join(body) + "</svg>")


def bar_chart(title: str, labels: list[str], series: dict[str, list[float]], *,
              width: int = 720, height: int = 280, stacked: bool = True) -> Markup:
    """Bars per label; several series are stacked (or side by side), with a legend."""
    left, bottom, top = 48, 70, 24
    names = list(series)
    n = max(1, len(labels))
    totals = [sum(series[s][i] for s in names) if stacked else
              max((series[s][i] for s in names), default=0) for i in range(len(labels))]
    peak = max(totals, default=0) or 1
    plot_h, slot = height - bottom - top, (width - left - 16) / n
    body = _axis(width, height, left, bottom, top, peak)
    for i, label in enumerate(labels):
        x0, base = left + 4 + i * slot, 0.0
        for k, name in enumerate(names):
            v = series[name][i]
            h = plot_h * v / peak
            bw = slot * 0.7 if stacked else slot * 0.7 / len(names)
            x = x0 if stacked else x0 + k * bw
            y = height - bottom - h - (plot_h * base / peak if stacked else 0)
            body.append(f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(bw)}" height="{_num(h)}"'
                        f' fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(str(label))}: '
                        f'{escape(name)} {_num(v)}</title></rect>')
            base += v if stacked else 0
        body.append(f'<text x="{_num(x0 + slot * 0.35)}" y="{height - bottom + 12}" '
                    f'font-size="10" text-anchor="end" transform="rotate(-35 '
                    f'{_num(x0 + slot * 0.35)} {height - bottom + 12})">'
                    f'{escape(str(label)[:28])}</text>')
    for k, name in enumerate(names):
        body.append(f'<rect x="{left + k * 130}" y="4" width="10" height="10" '
                    f'fill="{PALETTE[k % len(PALETTE)]}"/><text x="{left + 14 + k * 130}" y="13" '
                    f'font-size="11">{escape(name)}</text>')
    return _frame(width, height, title, body)


def line_chart(title: str, labels: list[str], values: list[float], *, width: int = 720,
               height: int = 260) -> Markup:
    """One series over ordered labels (e.g. months), points marked with their values."""
    left, bottom, top = 48, 50, 16
    peak = max(values, default=0) or 1
    n = len(labels)
    step = (width - left - 24) / max(1, n - 1)
    pts = [(left + 8 + i * step, height - bottom - (height - bottom - top) * v / peak)
           for i, v in enumerate(values)]
    body = _axis(width, height, left, bottom, top, peak)
    if pts:
        body.append('<polyline fill="none" stroke="#2d5f9a" stroke-width="2" points="'
                    + " ".join(f"{_num(x)},{_num(y)}" for x, y in pts) + '"/>')
    for (x, y), label, v in zip(pts, labels, values):
        body.append(f'<circle cx="{_num(x)}" cy="{_num(y)}" r="3" fill="#2d5f9a"><title>'
                    f'{escape(str(label))}: {_num(v)}</title></circle>')
        body.append(f'<text x="{_num(x)}" y="{height - bottom + 14}" font-size="10" '
                    f'text-anchor="middle">{escape(str(label))}</text>')
    return _frame(width, height, title, body)
