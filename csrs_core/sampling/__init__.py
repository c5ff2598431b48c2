"""Stage A: noisy copies and their votes (counts), the plan of precision and batch (plan), stored
records (store), what a certification samples, resumes and reuses (stage_a), and the Python API for a
model in memory (smoothed)."""
