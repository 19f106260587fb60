"""Pictures of runs and sweeps: the classic experiment's figures, comparisons and heatmaps.

- :meth:`PropagationResult.plot` draws the classic figures of one run: layer mean and layer
  std against depth, and one activation histogram per layer;
- :func:`histograms` draws the histogram grid alone;
- :func:`compare` draws one per-layer statistic of several runs as one line each;
- :func:`heatmap` draws one layer's statistic of a sweep's table over two of its parameters
  (e.g. the order-to-chaos phase diagram over σ_w × σ_b);
- :func:`phase_diagram` draws that heatmap with the critical line of mean-field theory.

Every function returns the :class:`matplotlib.figure.Figure` it drew on, and takes ``ax=``
to draw into axes (or a figure or subfigure) of the caller's instead of a new figure.
Layers are numbered from 1, as in ``print(result)`` and ``result.to_frame()``; negative
numbers count from the deepest layer (-1 is the last).

Extra series per layer (a prediction, a second measurement) are one more argument,
``overlay=``, drawn dashed over the measured lines.

matplotlib (``pip install 'initscope[plot]'``) and pandas are imported only inside these
functions, so ``import initscope`` stays light.  New figures come from pyplot, so that
``plt.show()`` and notebooks display them; close them with ``plt.close(fig)`` in loops.
Without a display and without a backend chosen by the user (``MPLBACKEND``, a matplotlibrc,
``matplotlib.use``), the Agg canvas is selected: nothing needs configuring on a server.
"""

from __future__ import annotations

from ._runs import MAX_HISTOGRAMS, compare, histograms, plot_result
from ._sweeps import AGGREGATES, heatmap
from ._theory import phase_diagram

__all__ = [
    "AGGREGATES",
    "MAX_HISTOGRAMS",
    "compare",
    "heatmap",
    "histograms",
    "phase_diagram",
    "plot_result",
]
