"""The `csrs` command: every option defined once (options), the commands (commands), and the report
of compared checkpoints in text, CSV, Markdown and LaTeX (report)."""
