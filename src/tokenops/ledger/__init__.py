"""The ledger: immutable priced spend events, the keys, and the price rows the events were priced with."""
