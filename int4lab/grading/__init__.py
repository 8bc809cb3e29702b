"""Grading a class: the out-of-process grader (grader) and the student copy (student_copy)."""
