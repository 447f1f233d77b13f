"""The HTML report: one self-contained page to attach to a ticket or open from a USB stick.

No scripts, no fonts, no images, no external links: inline CSS only, so it renders the same
offline and in a mail client's sandbox. Per link, a heatmap of the RTT matrix (rows: from,
columns: to): green under 1 ms, yellow under the latency threshold, red above it, dark red where
the port is closed or filtered, grey where nothing was measured. Every value from the report is
escaped; payloads sit in <details> elements, which open without JavaScript.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any, Mapping

from pvestrap.findings import Finding, Severity
from pvestrap.report.jsonout import plain
from pvestrap.report.model import Report
from pvestrap.report.text import display_message, summary_counts

GOOD_MS = 1.0
DEFAULT_THRESHOLD_MS = 2.0
BLOCKED_STATES = ("closed", "filtered", "disconnected")  # probes and knet link states

_CSS = """
:root{--pass:#1a7f37;--warn:#9a6700;--fail:#cf222e;--skip:#6e7781;--info:#0969da;
--ok:#2da44e;--slow:#e3b341;--bad:#e5534b;--blocked:#7d1a1a;--none:#d0d7de;--ink:#1f2328}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--ink);margin:0;background:#f6f8fa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 10px}
h3{font-size:16px;margin:18px 0 8px}
.meta{color:#57606a;font-size:13px;margin:0 0 16px}.meta span{margin-right:14px}
.cards{display:flex;gap:10px;flex-wrap:wrap;margin:12px 0}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:10px 16px;min-width:110px}
.card b{display:block;font-size:24px}.card.fail b{color:var(--fail)}.card.warn b{color:var(--warn)}
.card.pass b{color:var(--pass)}.card.skip b{color:var(--skip)}
.verdict{display:inline-block;padding:4px 12px;border-radius:16px;color:#fff;font-weight:600}
.verdict.fail{background:var(--fail)}.verdict.warn{background:var(--warn)}
.verdict.pass{background:var(--pass)}
section.box{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:4px 16px 12px;
margin:12px 0}section.box h2{margin:12px 0 6px}
table.matrix{border-collapse:separate;border-spacing:3px;margin:6px 0 4px}
table.matrix th{font-size:13px;font-weight:600;padding:4px 8px;text-align:center}
table.matrix th.from{text-align:right}
table.matrix td{width:78px;height:44px;text-align:center;border-radius:5px;font-size:13px;
font-variant-numeric:tabular-nums}
td.ok{background:var(--ok);color:#fff}td.slow{background:var(--slow);color:#1f2328}
td.bad{background:var(--bad);color:#fff}td.blocked{background:var(--blocked);color:#fff}
td.none{background:var(--none);color:#57606a}td.self{background:#f6f8fa;color:#8c959f}
.legend{font-size:12px;color:#57606a;margin:4px 0 8px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:3px;margin:0 4px -2px 10px}
ul.findings{list-style:none;padding:0;margin:0}
ul.findings li{padding:8px 0;border-top:1px solid #eaeef2}
ul.findings li:first-child{border-top:0}
.sev{display:inline-block;min-width:48px;text-align:center;font-size:12px;font-weight:700;
border-radius:4px;padding:1px 6px;color:#fff;margin-right:8px}
.sev.pass{background:var(--pass)}.sev.warn{background:var(--warn)}.sev.fail{background:var(--fail)}
.sev.skip{background:var(--skip)}.sev.info{background:var(--info)}
.subject{font-weight:600;margin-right:6px}
code{font:12px ui-monospace,"DejaVu Sans Mono",monospace;background:#eff1f3;padding:1px 5px;
border-radius:4px}
.remedy{margin:4px 0 0 58px;color:#57606a}.remedy b{color:var(--ink)}
.ignored{font-size:12px;color:var(--warn);font-weight:600;margin-left:6px}
details{margin:4px 0 0 58px}summary{cursor:pointer;color:#57606a;font-size:13px}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px;overflow:auto;
font-size:12px;margin:4px 0}
@media print{body{background:#fff}section.box{break-inside:avoid}}
"""


def cell_class(rtt: Any, state: Any, threshold_ms: float, diagonal: bool = False) -> str:
    """The heatmap colour of one cell (a CSS class): self, blocked, none, ok, slow or bad."""
    if diagonal:
        return "self"
    if state in BLOCKED_STATES:
        return "blocked"
    if not isinstance(rtt, (int, float)) or isinstance(rtt, bool) or rtt != rtt:
        return "none"
    if rtt < GOOD_MS:
        return "ok"
    return "slow" if rtt < threshold_ms else "bad"


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _at(grid: Any, i: int, j: int) -> Any:
    try:
        return grid[i][j]
    except (IndexError, TypeError, KeyError):
        return None


def _threshold(report: Report, matrix: Mapping[str, Any]) -> float:
    for value in (matrix.get("threshold_ms"), report.meta.get("latency_fail_ms")):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return DEFAULT_THRESHOLD_MS


def _cell(src: str, dst: str, rtt: Any, state: Any, loss: Any, cls: str) -> str:
    if cls == "self":
        return '<td class="self">&#8212;</td>'
    if cls == "blocked":
        text = str(state)
    elif cls == "none":
        text = "n/a"
    else:
        text = f"{rtt:.2f} ms"
    tip = f"{src} \u2192 {dst}: {text}"
    if state and cls != "blocked":
        tip += f" ({state})"
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        tip += f", loss {loss:g} %"
    return (f'<td class="{cls}" title="{_e(tip)}" data-from="{_e(src)}" data-to="{_e(dst)}">'
            f"{_e(text)}</td>")


def render_matrix(name: str, matrix: Mapping[str, Any], threshold_ms: float) -> str:
    """One link's heatmap table (rows from, columns to)."""
    nodes = [str(n) for n in matrix.get("nodes", ())]
    rtt, state, loss = (matrix.get("rtt_ms") or []), (matrix.get("state") or []), \
        (matrix.get("loss_pct") or [])
    port = matrix.get("port")
    head = "".join(f'<th scope="col">{_e(n)}</th>' for n in nodes)
    rows = []
    for i, src in enumerate(nodes):
        cells = "".join(
            _cell(src, dst, _at(rtt, i, j), _at(state, i, j), _at(loss, i, j),
                  cell_class(_at(rtt, i, j), _at(state, i, j), threshold_ms, i == j))
            for j, dst in enumerate(nodes))
        rows.append(f'<tr><th scope="row" class="from">{_e(src)}</th>{cells}</tr>')
    title = f"{name}" + (f" (UDP {port})" if port is not None else "")
    legend = (f'<div class="legend">RTT:<i style="background:var(--ok)"></i>&lt; {GOOD_MS:g} ms'
              f'<i style="background:var(--slow)"></i>&lt; {threshold_ms:g} ms'
              f'<i style="background:var(--bad)"></i>&#8805; {threshold_ms:g} ms'
              '<i style="background:var(--blocked)"></i>closed / filtered'
              '<i style="background:var(--none)"></i>not measured</div>')
    return (f'<section class="box matrix" id="matrix-{_e(name)}"><h3>{_e(title)}</h3>'
            f'<table class="matrix" data-link="{_e(name)}"><thead><tr>'
            f'<th class="from">from \\ to</th>{head}</tr></thead><tbody>{"".join(rows)}'
            f"</tbody></table>{legend}</section>")


def _finding(f: Finding) -> str:
    sev = f.severity.value
    parts = [f'<li class="finding {sev}" data-code="{_e(f.code)}">',
             f'<span class="sev {sev}">{_e(f.severity.label)}</span>']
    if f.subject:
        parts.append(f'<span class="subject">{_e(f.subject)}</span>')
    parts.append(f'<span class="message">{_e(display_message(f))}</span> '
                 f"<code>{_e(f.code)}</code>")
    if f.ignored:
        parts.append('<span class="ignored">FAIL ignored by request</span>')
    if f.remedy and f.severity in (Severity.WARN, Severity.FAIL):
        parts.append(f'<div class="remedy"><b>Fix:</b> {_e(f.remedy)}</div>')
    if f.payload:
        body = json.dumps(plain(f.payload), indent=2, sort_keys=True, ensure_ascii=False)
        parts.append(f"<details><summary>measured values</summary><pre>{_e(body)}</pre>"
                     "</details>")
    parts.append("</li>")
    return "".join(parts)


def _summary(report: Report) -> str:
    c = summary_counts(report)
    if c["failures"]:
        verdict, text = "fail", "FAIL: the cluster should not be built like this"
    elif c["warnings"]:
        verdict, text = "warn", "PASS with warnings"
    else:
        verdict, text = "pass", "PASS"
    cards = "".join(
        f'<div class="card {cls}"><b>{c[key]}</b>{label}</div>'
        for key, label, cls in (("total", "checks", ""), ("passed", "passed", "pass"),
                                ("warnings", "warnings", "warn"), ("failures", "failures", "fail"),
                                ("skipped", "skipped", "skip")))
    return (f'<section id="summary"><span class="verdict {verdict}">{_e(text)}</span>'
            f'<div class="cards">{cards}</div></section>')


def render_html(report: Report) -> str:
    meta = "".join(f"<span><b>{_e(k)}:</b> {_e(v)}</span>" for k, v in report.meta.items()
                   if isinstance(v, (str, int, float)))
    body = [f"<h1>{_e(report.title)}</h1>", f'<p class="meta">{meta}</p>', _summary(report)]
    if report.matrices:
        body.append("<h2>Links: round-trip time</h2>")
        for name, matrix in report.matrices.items():
            body.append(render_matrix(str(name), matrix, _threshold(report, matrix)))
    for section in report.sections:
        if not section.findings:
            continue
        items = "".join(_finding(f) for f in section.findings)
        body.append(f'<section class="box" id="section-{_e(section.name)}">'
                    f'<h2>{_e(section.title)}</h2><ul class="findings">{items}</ul></section>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            # Belt and braces: even an escaping bug could not load anything from elsewhere.
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'\">"
            f"<title>{_e(report.title)}</title><style>{_CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")
