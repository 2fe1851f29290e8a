"""Helpers several routes share: the app's registry and settings for a route, input checks,
named prompts, batched inference with token counts, image fetching."""
