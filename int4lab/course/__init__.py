"""Lesson helpers: the plots and small tools each notebook calls (one module per lesson)."""
