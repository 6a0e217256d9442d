"""Feast entities: what a feature row is about."""

from feast import Entity, ValueType

instrument = Entity(
    name="instrument",
    join_keys=["instrument"],
    value_type=ValueType.STRING,
    description="A traded instrument, named as on the events topic (e.g. AAPL, BTCUSDT).",
    owner="quant@bookstream",
    tags={"domain": "market"},
)
