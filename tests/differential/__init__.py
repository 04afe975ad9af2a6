"""The differential test's parts: generated programs, the task that runs one, the comparison."""
