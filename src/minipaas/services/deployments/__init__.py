"""Deployments, one module per question.

- records: what the API asks for and reads (request, list, get)
- cancellation: cancel a deployment, and the worker's check for it
- events: the progress lines people watch
- pipeline: how a deploy goes, step by step, in the worker
- readiness: is a new container healthy (shared with start and restart)
- outcome: ending a deployment as succeeded or failed
- recovery: ending a deployment whose worker died
"""
