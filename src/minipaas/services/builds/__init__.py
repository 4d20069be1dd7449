"""Builds from source, one module per question.

- context: is an uploaded context safe to build (and its clean copy)
- naming: the tags built images get
- records: what the API asks for and reads (request, list, get, cancel, log)
- pipeline: how a build goes, in a builder process
- recovery: builds whose builder died, and old build images
"""
