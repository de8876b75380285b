"""Analytics: the ClickHouse tables, experiments, the report and the live dashboard."""
