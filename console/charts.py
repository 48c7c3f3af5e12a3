"""Dashboard charts rendered on the server with matplotlib (Agg) to PNG: no JavaScript, no CDN."""

from __future__ import annotations

import io
import threading

from console.stats import DashboardStats
from skintriage.vocabulary import Tier

CHARTS = ("cases_per_day", "reply_time", "agreement")
TIER_COLOURS = {
    Tier.HIGH: "#c0392b",
    Tier.UNCERTAIN: "#8e44ad",
    Tier.MEDIUM: "#e67e22",
    Tier.LOW: "#27ae60",
    Tier.RETAKE: "#7f8c8d",
    "none": "#bdc3c7",
}
# matplotlib's font cache and text layout are not thread-safe; routes run in a thread pool.
_render_lock = threading.Lock()


def _figure():  # untyped: matplotlib types are imported lazily
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def render_chart(name: str, stats: DashboardStats) -> bytes:
    """PNG bytes of one named dashboard chart; ValueError for an unknown name."""
    if name not in CHARTS:
        raise ValueError(f"unknown chart {name!r}; use one of {', '.join(CHARTS)}")
    with _render_lock:
        fig, ax = _figure()
        labels = [d.strftime("%m-%d") for d in stats.days]
        positions = list(range(len(labels)))
        if name == "cases_per_day":
            bottom = [0] * len(labels)
            for tier, counts in stats.per_day.items():
                ax.bar(positions, counts, bottom=bottom, label=tier, color=TIER_COLOURS.get(tier, "#34495e"))
                bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
            ax.set_ylabel("cases")
            ax.set_title("Cases per day by tier (UTC)")
            if stats.per_day:
                ax.legend(loc="upper left", fontsize="small", ncols=3)
        elif name == "reply_time":
            values = [v for v in stats.reply_median_per_day if v is not None]
            # Seconds while answers are quick, minutes once they are not.
            scale, unit = (60, "minutes") if values and max(values) >= 120 else (1, "seconds")
            points = [(i, v / scale) for i, v in enumerate(stats.reply_median_per_day) if v is not None]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color="#2c3e50")
            ax.set_ylim(bottom=0)
            ax.set_ylabel(unit)
            ax.set_title("Median time from photo to answer, per day")
        else:
            classes = list(stats.agreement)
            shares = [(stats.agreement[c].share or 0.0) * 100 for c in classes]
            bars = ax.bar(classes, shares, color="#2980b9")
            for bar, cls in zip(bars, classes, strict=True):
                a = stats.agreement[cls]
                ax.annotate(
                    f"{a.agreed}/{a.reviewed}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize="small",
                )
            ax.set_ylim(0, 110)
            ax.set_ylabel("% agreed")
            ax.set_title("Operators agreeing with the model, by the model's label")
            return _png(fig)
        step = max(1, len(labels) // 10)
        ax.set_xticks(positions[::step], labels[::step], fontsize="small")
        return _png(fig)
