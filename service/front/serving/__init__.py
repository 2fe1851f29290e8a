"""What the routes do: inputs through the model's batcher, and the answer shaped for the
route's protocol, one module per family (vLLM's serving.py)."""
