"""What the figure tests check of a drawn figure: text that overlaps, points under a legend, the caption."""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg


def render(figure):
    """Lay `figure` out and draw it, as saving it would; its renderer."""
    FigureCanvasAgg(figure)
    figure.canvas.draw()
    return figure.canvas.get_renderer()


def _every_axis(figure):
    for axis in figure.axes:
        if axis.get_visible():
            yield axis
            yield from (child for child in axis.child_axes if child.get_visible())  # a secondary axis


def overlapping_tick_labels(figure, gap: float = 2.0) -> list[tuple[str, str]]:
    """The pairs of tick labels that overlap or come within `gap` pixels of each other (so close that they read as
    one: "18" and "20" as "1820"), on any axis of `figure` (a secondary axis too)."""
    renderer = render(figure)
    pairs = []
    for axis in _every_axis(figure):
        for which in (axis.xaxis, axis.yaxis):
            labels = [t for t in (*which.get_ticklabels(), *which.get_ticklabels(minor=True))
                      if t.get_visible() and t.get_text()]
            boxes = [t.get_window_extent(renderer).padded(gap / 2) for t in labels]
            pairs += [(labels[i].get_text(), labels[j].get_text()) for i in range(len(boxes))
                      for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    return pairs


def tick_labels(axis, which: str = "x", minor: bool = False) -> list[str]:
    return [t.get_text() for t in getattr(axis, f"get_{which}ticklabels")(minor=minor) if t.get_text()]


def points(axis) -> np.ndarray:
    """Every data point drawn in `axis` (lines' vertices, scatter offsets), in display coordinates."""
    found = [line.get_xydata() for line in axis.lines if len(line.get_xydata()) and line.get_gid() != "chance"
             and line.get_transform() == axis.transData]
    found += [np.asarray(c.get_offsets()) for c in axis.collections if len(c.get_offsets())
              and c.get_offset_transform() == axis.transData]
    data = np.concatenate([f.reshape(-1, 2) for f in found]) if found else np.empty((0, 2))
    data = data[np.isfinite(data).all(axis=1)]
    return axis.transData.transform(data)


def outside(legend, axis) -> bool:
    """Whether `legend` lies wholly outside `axis`'s panel."""
    renderer = render(axis.get_figure(root=True))
    return not legend.get_window_extent(renderer).overlaps(axis.get_window_extent(renderer))


def points_under(legend, axis) -> int:
    """How many of `axis`'s points `legend` covers."""
    box = legend.get_window_extent(render(axis.get_figure(root=True)))
    return int(sum(box.contains(x, y) for x, y in points(axis)))


def caption(figure) -> str:
    return next(text.get_text() for text in figure.texts if text.get_gid() == "caption")


def chance_lines(axis) -> list:
    return [line for line in axis.lines if line.get_gid() == "chance"]
