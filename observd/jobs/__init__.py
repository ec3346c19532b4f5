"""Picklable jobs that run in worker processes, and the worker pool itself."""
