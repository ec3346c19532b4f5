"""Imported by the worker pool's fork server, and only there (`jobs.pool` preloads it): the fork
server ends when observd's process ends (`jobs.lifeline`). Importing it anywhere else would tie
that process to its own parent."""

from observd.jobs.lifeline import watch_parent

watch_parent()
