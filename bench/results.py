"""What ``telebridge bench`` writes: one row of figures per measured step (from the load
processes' per-site reports and the server's CPU and memory), then ``summary.json``,
``summary.md`` and PNG charts (matplotlib, Agg backend) in the results folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY_FIELDS = (
    "sites",
    "sites_connected",
    "sites_refused",
    "sites_failed",
    "sites_pending",
    "loss_pct",
    "delay_p50_ms",
    "delay_p99_ms",
    "join_s_p99",
    "join_s_max",
    "sfu_cpu_pct",
    "sfu_rss_mb",
)


def _pct(values: list[float], q: float, digits: int = 2) -> float | None:
    return round(float(np.percentile(values, q)), digits) if values else None


def aggregate(
    sites: list[dict[str, Any]], window_s: float, joining: set[str] | None = None
) -> dict[str, Any]:
    """The figures of one window from every site's report row; join times only of the
    sites in ``joining`` (a ramp step's new sites) when given."""
    subscribers = [s for s in sites if "expected" in s]
    connected = [s for s in sites if s["media"]]
    delays: list[float] = []
    lags: list[float] = []
    for s in subscribers:
        if s["media"]:
            delays.extend(s.get("delays", []))
            lags.extend(s.get("read_lags", []))
    refusals = [s["refused_s"] for s in sites if s.get("refused_s") is not None]

    def of_joining(key: str) -> list[float]:
        return [
            s[key]
            for s in subscribers
            if s.get(key) is not None and (joining is None or s["identity"] in joining)
        ]

    joins = of_joining("join_s")
    ices = of_joining("ice_s")
    dtlss = of_joining("dtls_s")

    def loss(rows: list[dict[str, Any]]) -> float | None:
        expected = sum(r["expected"] for r in rows if r["media"])
        received = sum(r["received"] for r in rows if r["media"])
        return round(100 * (1 - received / expected), 3) if expected else None

    row: dict[str, Any] = {
        "sites": len(sites),
        "sites_connected": len(connected),
        "sites_refused": sum(1 for s in sites if s["refused"]),
        "sites_failed": sum(1 for s in sites if not s["media"] and not s["refused"] and s["error"]),
        # still joining when the window ended: neither media, nor an answer, nor an error
        "sites_pending": sum(
            1 for s in sites if not s["media"] and not s["refused"] and not s["error"]
        ),
        "observers": len(subscribers),
        "window_s": round(window_s, 2),
        "loss_pct": loss(subscribers),
        "delay_p50_ms": _pct(delays, 50),
        "delay_p99_ms": _pct(delays, 99),
        "delay_max_ms": round(max(delays), 2) if delays else None,
        "delay_samples": len(delays),
        # the load processes' own lag reading packets (not in the delays above)
        "read_lag_p50_ms": _pct(lags, 50),
        "read_lag_p99_ms": _pct(lags, 99),
        "join_s_p50": _pct(joins, 50, 3),
        "join_s_p99": _pct(joins, 99, 3),
        "join_s_max": round(max(joins), 3) if joins else None,
        # the handshakes within the join: do they wait behind a busy worker's media?
        "ice_s_p50": _pct(ices, 50, 3),
        "ice_s_p99": _pct(ices, 99, 3),
        "dtls_s_p50": _pct(dtlss, 50, 3),
        "dtls_s_p99": _pct(dtlss, 99, 3),
        # how long a refused site's subscribe waited for its answer (admission control)
        "refused_s_p99": _pct(refusals, 99, 3),
        "refused_s_max": round(max(refusals), 3) if refusals else None,
        "nacks_sent": sum(s.get("nacks", 0) for s in subscribers),
        "plis_sent": sum(s.get("plis", 0) for s in subscribers),
        "twcc_feedback_sent": sum(s.get("twcc", 0) for s in subscribers),
        "rtx_received": sum(s.get("rtx", 0) for s in subscribers),
        "probe_padding_received": sum(s.get("padding", 0) for s in subscribers),
        "verify_failed": sum(s.get("verify_failed", 0) for s in subscribers),
        # media packets the sites got a second: the unit of the per-packet costs below
        "rx_pkt_s": round(sum(s["received"] for s in subscribers) / window_s)
        if window_s > 0
        else None,
    }
    weak = [s for s in subscribers if s["weak"]]
    if weak:
        good = [s for s in subscribers if not s["weak"]]
        row["loss_pct_weak_links"] = loss(weak)
        row["loss_pct_good_links"] = loss(good)
        good_delays = [d for s in good if s["media"] for d in s.get("delays", [])]
        row["delay_p99_ms_good_links"] = _pct(good_delays, 99)
    stuck: dict[str, int] = {}
    for s in sites:
        if not s["media"] and not s["refused"] and not s.get("error"):
            stuck[s.get("stage", "?")] = stuck.get(s.get("stage", "?"), 0) + 1
    if stuck:
        row["pending_stages"] = stuck
    errors: dict[str, int] = {}
    for s in sites:
        if s.get("error") and not s["media"]:
            errors[s["error"][:120]] = errors.get(s["error"][:120], 0) + 1
    if errors:
        row["errors"] = dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5])
    return row


def per_packet(row: dict[str, Any]) -> None:
    """CPU µs per media packet the sites received, of the workers and of the load
    generator: everything a site costs (its feedback, timers, pipes) over the packets it
    gets, to read against ``python -m bench.floor`` (bare SRTP + UDP) at the same rate,
    on a shared machine whose speed changes from day to day."""
    rate = row.get("rx_pkt_s")
    for key in ("worker", "loadgen"):
        cpu = row.get(f"{key}_cpu_pct")
        row[f"{key}_us_per_pkt"] = round(cpu * 1e4 / rate, 1) if rate and cpu is not None else None


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]], charts: list[str]) -> str:
    lines = [
        f"# telebridge bench {meta['scenario']}",
        "",
        f"{meta['description']}. Server: {meta['server']}. Load: {meta['load_procs']} "
        f"process(es) on this machine ({meta['cpus']} CPUs"
        + (", shared with other work" if meta.get("shared") else "")
        + f"). Window {meta['duration']} s per step. {meta['started']}.",
        "",
    ]
    if meta.get("capacity") is not None:
        lines += [
            f"**Capacity** (last step with loss <= 1 % and p99 added delay <= 100 ms): "
            f"**{meta['capacity']} sites**.",
            "",
        ]
    columns = [
        ("sites", "sites"),
        ("sites_connected", "with media"),
        ("sites_refused", "refused"),
        ("sites_pending", "still joining"),
        ("loss_pct", "loss %"),
        ("delay_p50_ms", "delay p50 ms"),
        ("delay_p99_ms", "delay p99 ms"),
        ("join_s_p99", "join p99 s"),
        ("join_s_max", "join max s"),
        ("ice_s_p99", "ICE p99 s"),
        ("dtls_s_p99", "DTLS p99 s"),
        ("sfu_cpu_pct", "SFU CPU %"),
        ("control_cpu_pct", "control CPU %"),
        ("worker_cpu_pct", "workers CPU %"),
        ("sfu_rss_mb", "SFU RSS MB"),
        ("control_rss_kb_per_site", "control KB/site"),
        ("worker_rss_kb_per_site", "workers KB/site"),
        ("loadgen_cpu_pct", "load CPU %"),
        ("rx_pkt_s", "site pkt/s"),
        ("worker_us_per_pkt", "workers µs/pkt"),
        ("loadgen_us_per_pkt", "load µs/pkt"),
    ]
    lines.append("| " + " | ".join(title for _, title in columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        cells = ["-" if row.get(key) is None else f"{row[key]}" for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for row in rows:
        if row.get("errors"):
            lines.append(f"- {row['sites']} sites: errors {row['errors']}")
        if row.get("pending_stages"):
            lines.append(f"- {row['sites']} sites: still joining, by stage {row['pending_stages']}")
        if row.get("loss_pct_weak_links") is not None:
            lines.append(
                f"- {row['sites']} sites: loss on weak links {row['loss_pct_weak_links']} %, "
                f"on the others {row['loss_pct_good_links']} % (p99 delay "
                f"{row['delay_p99_ms_good_links']} ms)"
            )
    lines += ["", *[f"![{name}]({name})" for name in charts], ""]
    return "\n".join(lines)


def charts(out: Path, rows: list[dict[str, Any]], timeline: list[dict[str, Any]]) -> list[str]:
    """sites vs SFU CPU, loss, delay p50/p99 and join time; and the run over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sites = [r["sites"] for r in rows]
    made = []

    def chart(name: str, title: str, ylabel: str, series: list[tuple[str, str]]) -> None:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, label in series:
            points = [(x, r.get(key)) for x, r in zip(sites, rows, strict=True)]
            xs = [x for x, y in points if y is not None]
            ys = [y for _, y in points if y is not None]
            ax.plot(xs, ys, marker="o", label=label)
        ax.set_xlabel("sites")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        if len(series) > 1:
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        made.append(name)

    chart(
        "cpu.png",
        "SFU CPU",
        "% of one core",
        [("sfu_cpu_pct", "SFU (control + workers)"), ("worker_cpu_pct", "workers")],
    )
    chart("loss.png", "Media loss at the sites", "%", [("loss_pct", "loss")])
    chart(
        "delay.png",
        "Added one-way delay",
        "ms",
        [("delay_p50_ms", "p50"), ("delay_p99_ms", "p99")],
    )
    chart(
        "join.png",
        "Join time (start to first media)",
        "s",
        [("join_s_p99", "p99"), ("join_s_max", "max")],
    )
    if timeline:
        fig, ax = plt.subplots(figsize=(6, 4))
        t = [p["t"] for p in timeline]
        ax.plot(t, [p["media"] for p in timeline], label="sites with media")
        ax.set_xlabel("s")
        ax.set_ylabel("sites")
        ax2 = ax.twinx()
        ax2.plot(
            t, [p.get("sfu_cpu_pct") or 0 for p in timeline], color="tab:red", label="SFU CPU %"
        )
        ax2.set_ylabel("SFU CPU %")
        ax.set_title("The run")
        fig.legend(loc="upper left")
        fig.tight_layout()
        fig.savefig(out / "timeline.png", dpi=100)
        plt.close(fig)
        made.append("timeline.png")
    return made


def write(
    out: Path, meta: dict[str, Any], rows: list[dict[str, Any]], timeline: list[dict[str, Any]]
) -> dict[str, Any]:
    """summary.json (the headline row's fields at the top, then every step and the
    timeline), summary.md and the charts."""
    out.mkdir(parents=True, exist_ok=True)
    made = charts(out, rows, timeline) if rows else []
    head = rows[-1] if rows else {key: None for key in SUMMARY_FIELDS}
    summary = {**head, "meta": meta, "steps": rows, "timeline": timeline}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(meta, rows, made))
    return summary
