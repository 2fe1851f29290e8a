"""Request and response schemas (pydantic), one module per family of routes."""
