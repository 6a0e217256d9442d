"""The execution side: pre-trade risk, the paper venue, portfolio and the sink's sequencer. Runs in
the execution sink."""
