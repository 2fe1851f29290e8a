"""`make bench`: what the service does on this machine, in figures (see README)."""
