"""Feature views over the stream job's feature rows (udfs/market/features.py has every
formula). Prices and sizes are in real units (``*_px``, ``*_qty``)."""

from datetime import timedelta

import pandas as pd
from data_sources import book_push, window_push
from entities import instrument
from feast import FeatureView, Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

OWNER = "quant@bookstream"

book_features = FeatureView(
    name="book_features",
    entities=[instrument],
    ttl=timedelta(minutes=10),
    schema=[
        Field(name="best_bid_px", dtype=Float64, description="Best bid price."),
        Field(name="best_ask_px", dtype=Float64, description="Best ask price."),
        Field(name="spread_px", dtype=Float64, description="best_ask - best_bid."),
        Field(name="mid_px", dtype=Float64, description="(best_bid + best_ask) / 2."),
        Field(name="microprice_px", dtype=Float64, description="Size-weighted mid."),
        Field(name="bid_size_qty", dtype=Float64, description="Size at the best bid."),
        Field(name="ask_size_qty", dtype=Float64, description="Size at the best ask."),
        Field(name="imbalance_1", dtype=Float64, description="Top-1 depth imbalance."),
        Field(name="imbalance_2", dtype=Float64, description="Top-2 depth imbalance."),
        Field(name="imbalance_3", dtype=Float64, description="Top-3 depth imbalance."),
        Field(name="bid_depth_qty", dtype=Float64, description="Bid depth, all levels."),
        Field(name="ask_depth_qty", dtype=Float64, description="Ask depth, all levels."),
        Field(name="ofi", dtype=Float64, description="Order-flow imbalance of this event."),
        Field(name="ts_event", dtype=Int64, description="Exchange time of the event, ns."),
        Field(
            name="ts_avail",
            dtype=Int64,
            description="When the live path could first use the row (event time, ns).",
        ),
    ],
    online=True,
    source=book_push,
    description="Book state after each consistent event (per-event features).",
    owner=OWNER,
    tags={"domain": "market", "cadence": "per-event", "stream": "features"},
)

window_features = FeatureView(
    name="window_features",
    entities=[instrument],
    ttl=timedelta(minutes=10),
    schema=[
        Field(name="rv", dtype=Float64, description="Realised volatility of mid log returns."),
        Field(name="ofi_window", dtype=Float64, description="OFI summed over the window."),
        Field(name="trade_volume_qty", dtype=Float64, description="Traded volume, window."),
        Field(
            name="trade_signed_volume_qty",
            dtype=Float64,
            description="Buy minus sell traded volume, window.",
        ),
        Field(name="trade_count", dtype=Int64, description="Trades in the window."),
    ],
    online=True,
    source=window_push,
    description="Windowed features: volatility, trade flow and OFI over the job's window.",
    owner=OWNER,
    tags={"domain": "market", "cadence": "windowed", "stream": "features"},
)

order_request = RequestSource(
    name="order_request",
    schema=[Field(name="order_qty", dtype=Float64, description="Size the caller would trade.")],
    description="What the caller is about to do, known only at request time.",
)


@on_demand_feature_view(
    sources=[book_features, order_request],
    # no per-field descriptions: Feast compares these fields with the ones it infers from a
    # run of the function, descriptions included
    schema=[
        Field(name="spread_bps", dtype=Float64),
        Field(name="order_vs_touch", dtype=Float64),
    ],
    mode="pandas",
    description="Derived at request time: spread_bps (spread over mid, basis points) and "
    "order_vs_touch (order_qty over bid + ask size at the touch).",
    owner=OWNER,
    tags={"domain": "market", "cadence": "request-time"},
)
def order_context(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["spread_bps"] = inputs["spread_px"] / inputs["mid_px"] * 1e4
    out["order_vs_touch"] = inputs["order_qty"] / (inputs["bid_size_qty"] + inputs["ask_size_qty"])
    return out
