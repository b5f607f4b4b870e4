"""One module per agent: each translates a task into a command and output lines into events."""
