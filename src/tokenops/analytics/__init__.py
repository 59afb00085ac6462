"""Analytics: anomaly detection, forecasting, allocation (showback/chargeback), unit economics and variance.

The algorithms here work on plain series and rows; they never open a ledger. The services layer reads the
ledger through its read interface and hands the rows here, so every analysis runs on DuckDB and PostgreSQL
alike. Heavy numeric libraries (numpy, statsforecast) load inside the functions that need them.
"""
