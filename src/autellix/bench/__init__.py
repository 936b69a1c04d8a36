"""Run workload specs against OpenAI-compatible endpoints and measure them as the paper does."""
