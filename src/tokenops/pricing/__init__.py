"""Prices are data with history: rows per (provider, model) in force from a date, with their source."""

from tokenops.pricing.model import Cost, LongContextTier, PriceRow, price_usage

__all__ = ["Cost", "LongContextTier", "PriceRow", "price_usage"]
