"""`inv lab.*`: a local practice cluster of systemd-booted hosts (tasks.py drives, plan.py decides)."""

from .tasks import down, poweroff, poweron, status, up

__all__ = ["up", "down", "status", "poweroff", "poweron"]
