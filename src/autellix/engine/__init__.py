"""The serving engine: the model, its paged KV cache, and the step loop around them."""
