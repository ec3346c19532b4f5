"""The daemon: its loop, arrivals, health, scheduler, systemd and status log."""
