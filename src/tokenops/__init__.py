"""TokenOps: FinOps for AI — meter, price, attribute and govern every LLM call."""

__version__ = "0.1.0"
