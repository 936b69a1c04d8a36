"""The OpenAI-compatible server with program sessions."""
