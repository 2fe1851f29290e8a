"""Per-kind behaviour as data: a registry from kind name to a small bundle of functions
(contract.py says what a bundle holds, registry.py which kinds there are).

A kind says how a batch of prepared payloads becomes graph feeds (``collate``), how graph
outputs become one result per payload (``postprocess``), and what to run at start-up to
warm the session (``warmup``). Request-side preparation (tokenization with the kind's rules)
lives next to these functions and is called by the serving layer before queueing.
"""
