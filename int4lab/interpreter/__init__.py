"""Triton's CPU interpreter, made safe for learners: the bounds guard (guard) and fixes for known
bugs of the supported Triton versions (compat). Installed by `import int4lab` when the
interpreter is on."""
