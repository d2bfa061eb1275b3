"""Per-key usage metering."""
