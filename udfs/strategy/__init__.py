"""The strategy side: signals, models, sizing and orders. Runs in the Flink job; never imports the
execution side."""
