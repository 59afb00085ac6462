"""Analytics over the ledger: breakdowns, and (later) unit costs, allocation, forecasts and anomalies."""
