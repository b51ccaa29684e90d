"""The market domain: intervals, the canonical OHLCV frame and the instrument universe."""
