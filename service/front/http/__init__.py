"""The HTTP plumbing around every route: admission (API keys, limits, draining), request
context and timing headers, the JSON short path, error rendering, the OpenAPI document and
how responses are encoded."""
