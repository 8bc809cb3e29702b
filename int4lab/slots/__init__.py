"""Every exercise slot of the course, registered on import (one module per lesson topic)."""
from . import vector_add, packing  # noqa: F401
