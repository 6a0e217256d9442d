"""Quant research, offline (issue 12 §4, §6): triple-barrier labels and meta-labels, purged
cross-validation (K-fold, combinatorial, walk-forward), the deflated Sharpe ratio and
hierarchical-risk-parity weights. Pure functions over numpy arrays in event time; no Flink,
Kafka or lake import. Needs the ``train`` extra (scipy) for the HRP clustering only.
``udfs.market`` never imports this package; it imports neither strategy nor execution."""
