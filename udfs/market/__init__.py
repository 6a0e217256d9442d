"""The market side: feeds, the order book, features and data quality. Runs in the publisher and in
the Flink job; imports neither the strategy nor the execution side."""
