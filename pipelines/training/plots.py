"""Loss curves as PNG bytes, and a way to embed them in Dagster markdown metadata."""

from __future__ import annotations

import base64
import io
import threading


def start_loading_in_background() -> threading.Thread:
    """Import matplotlib (~1 s) on a side thread while training runs, not after it (imports are
    thread-safe: ``loss_curve_png`` waits for this one if it has not finished)."""
    loader = threading.Thread(target=_import_pyplot, name="matplotlib-import", daemon=True)
    loader.start()
    return loader


def _import_pyplot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def loss_curve_png(curves: dict[str, list[tuple[int, float]]], title: str) -> bytes:
    _import_pyplot()
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.2), dpi=100)
    for label, points in curves.items():
        axis.plot([s for s, _ in points], [v for _, v in points], label=label)
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_title(title)
    axis.legend()
    axis.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def png_markdown(png: bytes, alt: str) -> str:
    """Dagster has no image metadata type: a base64 data URI inside markdown renders in the UI."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
