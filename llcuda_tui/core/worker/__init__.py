"""Remote workers: the batched engine, the OpenAI-compatible HTTP worker and its client.

``batch.BatchEngine`` (continuous batching on llama.cpp), ``server`` (``llcuda serve``: Starlette
+ uvicorn), ``client.RemoteEngine`` (the Engine interface over HTTP), ``protocol`` (the wire
format both sides share). Nothing here imports Textual.
"""
