"""The schedule registry (a separate module so schedule files can register themselves)."""
from ..registry import Registry

SCHEDULES: Registry = Registry("schedule")
