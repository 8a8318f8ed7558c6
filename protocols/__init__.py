"""Evaluation protocols, one file each (``patches``, ``noise``, ``classification``, ``fid``,
``num_patches``, ``combination``, ...).

Every module in this folder is imported when the protocol registry is first read
(:func:`kpbench.protocol.list_protocols`) and registers its :class:`kpbench.protocol.Protocol`:
what it measures, how reports show its rows, and the metrics it computes
(:func:`kpbench.metricinfo.register_metric`). To add a protocol, add a file here: nothing else
lists it. ``kpbench list`` prints each protocol's question. ``user_study`` registers a
protocol that ``kpbench eval`` does not run: its rows come from ``kpbench study analyze``.
"""
